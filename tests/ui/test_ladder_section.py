"""The results page's load ladder: a row per step, saturated runs marked apart, the per-mesh
summary as analysis/ladder.py computes it, the two ladder charts, and words for what is
missing or unusable."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from meshbench.analysis import aggregate, charts, ladder
from meshbench.results import migrate
from meshbench.ui import data, ladder_section
from meshbench.ui.app import create_app, require_results_access

from .conftest import LADDER_DAY, LADDER_ENVIRONMENT, load_local_ladder

pytestmark = pytest.mark.postgres

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LADDER_PAGE = {"environment": LADDER_ENVIRONMENT, "date": str(LADDER_DAY)}


class TableRows(HTMLParser):
    """The body rows of the table with one CSS class: the row's attributes, its mesh cell
    and its other cells by ``data-column``."""

    def __init__(self, table_class: str) -> None:
        super().__init__()
        self.table_class = table_class
        self.rows: list[dict] = []
        self._in_table = self._in_body = False
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table" and self.table_class in (attributes.get("class") or "").split():
            self._in_table = True
        elif self._in_table and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append({"attributes": attributes, "mesh": "", "cells": {}})
        elif self._in_body and tag == "td":
            self._cell = attributes.get("data-column") or "mesh"
            if self._cell != "mesh":
                self.rows[-1]["cells"][self._cell] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "table":
            self._in_table = self._in_body = False

    def handle_data(self, content: str) -> None:
        if self._cell == "mesh":
            self.rows[-1]["mesh"] += content
        elif self._cell is not None:
            self.rows[-1]["cells"][self._cell] += content


def table_rows(body: str, table_class: str) -> list[dict]:
    parser = TableRows(table_class)
    parser.feed(body)
    return parser.rows


@pytest.fixture(scope="module")
def reader(page_database):
    engine = data.reader_engine(page_database.url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def signed_in(reader) -> TestClient:
    app = create_app(engine_dependency=lambda: reader)
    app.dependency_overrides[require_results_access] = lambda: None
    return TestClient(app)


@pytest.fixture(scope="module")
def ladder_page(signed_in) -> str:
    page = signed_in.get("/", params=LADDER_PAGE)
    assert page.status_code == 200
    return page.text


def test_each_load_step_is_a_row_and_saturated_runs_have_a_marked_row_of_their_own(
    ladder_page,
) -> None:
    assert f"Load ladder · {LADDER_ENVIRONMENT} · {LADDER_DAY}" in ladder_page
    rows = table_rows(ladder_page, "ladder-steps")
    shown = [
        (row["mesh"], row["cells"]["step"], row["attributes"].get("class") == "saturated")
        for row in rows
    ]
    assert shown == [
        ("baseline (no mesh)", "c4-q2000", False),
        ("baseline (no mesh)", "c16-max", False),
        ("envoy-mtls (emulated)", "c4-q2000", False),
        ("envoy-mtls (emulated)", "c4-q2000", True),
        ("envoy-mtls (emulated)", "c16-max", False),
    ]
    kept_up, saturated, as_fast = (row["cells"] for row in rows[2:])
    # Iterations 1 and 2 reached 2000 QPS; iteration 3's 1500 QPS is not in their means.
    assert kept_up == {
        "step": "c4-q2000",
        "connections": "4",
        "target QPS": "2000",
        "achieved QPS": "1992.50",
        "of target": "99.6 %",
        "runs": "2 of 3",
        "p50": "0.420",
        "p90": "0.760",
        "p99": "1.100",
        "p99.9": "1.650",
        "added p99 vs paired baseline": "0.780",
        "saturation": "reached",
    }
    assert (saturated["achieved QPS"], saturated["of target"], saturated["runs"]) == (
        "1500.00",
        "75.0 %",
        "1 of 3",
    )
    assert (saturated["p99"], saturated["saturation"]) == ("5.000", "SATURATED")
    assert saturated["added p99 vs paired baseline"] == "4.680"
    assert (as_fast["target QPS"], as_fast["achieved QPS"], as_fast["runs"]) == (
        "max",
        "6100.00",
        "2",
    )
    assert as_fast["saturation"] == as_fast["added p99 vs paired baseline"] == "–"
    assert "never averaged with the runs that reached the target" in ladder_page


def test_the_per_mesh_summary_is_what_the_ladder_analysis_computes(ladder_page, reader) -> None:
    results = ladder.mesh_results(ladder.fetch_ladder(reader, LADDER_ENVIRONMENT, LADDER_DAY))
    assert {r.mesh for r in results} == {"baseline", "envoy-mtls"}
    rows = {row["mesh"]: row["cells"] for row in table_rows(ladder_page, "ladder-meshes")}
    assert set(rows) == {"baseline (no mesh)", "envoy-mtls (emulated)"}
    for result in results:
        cells = rows["baseline (no mesh)" if result.mesh == "baseline" else "envoy-mtls (emulated)"]
        assert cells == {
            "ceiling": f"{result.ceiling_qps.text(0)} at {result.ceiling_step}",
            "added p99": result.added_p99_ms.text(3),
            "mesh vCPU": result.mesh_cpu_per_1000.text(3),
            "machine vCPU": result.path_cpu_per_1000.text(3),
            "mesh memory": result.mesh_memory_mb.text(1),
        }
    envoy = rows["envoy-mtls (emulated)"]
    # From the ladder's known numbers: 6000 and 6200 QPS; p99 pairs 1.00-0.30, 1.20-0.34;
    # mesh CPU 200 and 250 ms per 1000 requests, the machine 600 and 700.
    assert envoy["ceiling"] == "6100 [4829, 7371] (n=2) at c16-max"
    assert envoy["added p99"] == "0.780 [-0.236, 1.796] (n=2)"
    assert envoy["mesh vCPU"].startswith("0.225 [") and envoy["machine vCPU"].startswith("0.650 [")
    assert rows["baseline (no mesh)"]["ceiling"].endswith("(n=2) at c16-max")
    # Every fixed step saturated somewhere (envoy-mtls's iteration 3): said in the header.
    assert "added p99 at c4-q2000, ms [95 % CI] (saturated)" in ladder_page
    assert "every fixed-rate step saturated for some mesh; the lowest, c4-q2000" in ladder_page


def test_the_ladder_charts_are_linked_and_rendered_as_pngs(ladder_page, signed_in) -> None:
    query = f"environment={LADDER_ENVIRONMENT}&amp;date={LADDER_DAY}"
    for kind in ladder_section.CHART_KINDS:
        assert f'src="/chart/{kind}.png?{query}"' in ladder_page
        response = signed_in.get(f"/chart/{kind}.png", params=LADDER_PAGE)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.content.startswith(PNG_MAGIC) and len(response.content) > 10_000
    assert "“kernel and background” is the machine's busy time" in ladder_page


def test_the_latency_chart_keeps_saturated_runs_apart(reader) -> None:
    runs = ladder.fetch_ladder(reader, LADDER_ENVIRONMENT, LADDER_DAY)
    points = ladder.ladder_points(runs)
    envoy = points[(points["mesh"] == "envoy-mtls") & (points["step_key"] == "c4-q2000")]
    assert sorted(zip(envoy["qps"], envoy["saturated"], strict=True)) == [
        (1500.0, True),
        (1992.5, False),
    ]
    assert set(points["mesh"]) == {"baseline", "envoy-mtls"}
    assert charts.latency_throughput_chart(points, "test").startswith(PNG_MAGIC)


def test_a_single_step_study_day_shows_only_a_note_that_no_ladder_exists(signed_in) -> None:
    body = signed_in.get("/", params={"environment": "equinix-metal"}).text
    assert ladder_section.NO_LADDER_NOTE in body
    assert 'id="ladder"' not in body and "ladder-steps" not in body
    assert body.count('<img class="chart') == 3  # QPS, latency and trend, as before


def test_ladder_charts_without_data_say_what_is_missing(signed_in) -> None:
    no_cost = signed_in.get(
        "/chart/cpu.png", params={"environment": "equinix-metal", "date": "2023-11-16"}
    )
    assert no_cost.status_code == 404
    assert "no run at c1-q6000" in no_cost.json()["detail"]
    no_runs = signed_in.get(
        "/chart/ladder.png", params={"environment": "nowhere", "date": "2020-01-01"}
    )
    assert no_runs.status_code == 404
    assert "no positive measured runs for nowhere on 2020-01-01" in no_runs.json()["detail"]


def test_unusable_values_get_a_message_not_a_traceback(signed_in, monkeypatch) -> None:
    def unusable(_frame):
        raise ValueError("attempt to get argmax of an empty sequence")

    monkeypatch.setattr(ladder, "mesh_results", unusable)
    monkeypatch.setattr(charts, "latency_throughput_chart", lambda *_: unusable(None))
    page = signed_in.get("/", params=LADDER_PAGE)
    assert page.status_code == 200
    assert (
        "The load steps of this date cannot be summarised: ValueError: "
        "attempt to get argmax of an empty sequence." in page.text
    )
    assert 'class="comparison"' in page.text  # the rest of the page stays
    chart = signed_in.get("/chart/ladder.png", params=LADDER_PAGE)
    assert chart.status_code == 422
    assert "cannot be charted: ValueError" in chart.json()["detail"]


def test_a_missing_ladder_view_names_the_mend_and_keeps_the_page(fresh_database) -> None:
    owner = create_engine(fresh_database("meshbench_no_ladder_view"))
    reader = None
    try:
        migrate.upgrade(owner)
        load_local_ladder(owner)
        aggregate.aggregate(owner)
        with owner.begin() as connection:
            connection.execute(text("DROP VIEW v_ladder"))
        reader = data.reader_engine(owner.url.render_as_string(hide_password=False))
        app = create_app(engine_dependency=lambda: reader)
        app.dependency_overrides[require_results_access] = lambda: None
        page = TestClient(app).get("/", params=LADDER_PAGE)
        assert page.status_code == 200
        assert "The load steps cannot be read: the results database is not migrated" in page.text
        assert "v_ladder" in page.text and "<code>meshbench db upgrade</code>" in page.text
        assert 'class="comparison"' in page.text
    finally:
        if reader is not None:
            reader.dispose()
        owner.dispose()
