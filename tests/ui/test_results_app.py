"""The results page's app in process: content, charts, the reader role, and refusal."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from meshbench.testing.histories import day_of
from meshbench.ui import data
from meshbench.ui.app import create_app, require_results_access

from .conftest import SYNTHETIC, VERSION_CHANGE_DAY

pytestmark = pytest.mark.postgres

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reader(page_database):
    engine = data.reader_engine(page_database.url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def signed_in(reader) -> TestClient:
    """A client whose every request counts as an authorised Airflow user."""
    app = create_app(engine_dependency=lambda: reader)
    app.dependency_overrides[require_results_access] = lambda: None
    return TestClient(app)


def test_the_page_engine_is_the_read_only_role(reader) -> None:
    with reader.connect() as connection:
        assert connection.execute(text("SELECT current_user")).scalar() == "meshbench_reader"
        connection.execute(text("RESET ROLE"))  # the startup option is the session default
        assert connection.execute(text("SELECT current_user")).scalar() == "meshbench_reader"
        with pytest.raises(DBAPIError, match=r"read-only transaction|permission denied"):
            connection.execute(text("DELETE FROM daily_summary"))


def test_the_study_table_is_on_the_page(signed_in) -> None:
    page = signed_in.get("/", params={"environment": "equinix-metal"})
    assert page.status_code == 200
    body = page.text
    assert "Comparison · equinix-metal · 2023-11-16" in body
    for number in ("1864.44", "0.53", "0.57", "0.68", "0.95", "4538.77", "5148.70", "2.55"):
        assert f">{number}</td>" in body, number
    assert "Istio 1.19.3" in body and "Kuma 2.4.3" in body and "NSM vl3 1.11.1" in body
    assert 'src="/chart/qps.png?environment=equinix-metal&amp;date=2023-11-16' in body


def test_history_regressions_and_negative_runs_are_listed(signed_in) -> None:
    page = signed_in.get("/", params={"environment": SYNTHETIC})
    assert page.status_code == 200
    body = page.text
    changed = day_of(VERSION_CHANGE_DAY)
    # The synthetic history is the study's one-step profile: its step is c1-q6000.
    assert (
        f'<tr class="regression"><td>{changed}</td><td class="text mesh">istio 1.20.0</td>'
        '<td class="text">c1-q6000</td><td class="text">p99_ms</td>' in body
    )
    assert "mesh version changed from 1.19.3 to 1.20.0 on this date" in body
    assert "fortio: connection refused after 12 s" in body
    assert "duration 55.1 s is 8.2 % off the requested 60 s" in body


@pytest.mark.parametrize(
    "path",
    [
        "/chart/qps.png?environment=equinix-metal&date=2023-11-16",
        "/chart/latency.png?environment=equinix-metal&date=2023-11-16",
        f"/trend.png?environment={SYNTHETIC}&since=2026-01-01&until=2026-01-30&metric=p99_ms",
    ],
)
def test_charts_are_pngs_rendered_from_the_database(signed_in, path: str) -> None:
    response = signed_in.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_MAGIC) and len(response.content) > 10_000


def test_bad_selections_are_refused_with_a_reason(signed_in) -> None:
    assert signed_in.get("/", params={"environment": "mars"}).status_code == 404
    assert signed_in.get("/", params={"date": "yesterday"}).status_code == 422
    assert signed_in.get("/", params={"metric": "p42"}).status_code == 422
    assert signed_in.get("/chart/pie.png?environment=x&date=2023-11-16").status_code == 404


@pytest.mark.parametrize(
    "path",
    ["/", "/docs", "/openapi.json", "/trend.png?environment=x&since=2026-01-01&until=2026-01-02"],
)
def test_anonymous_requests_are_refused(reader, path: str) -> None:
    anonymous = TestClient(create_app(engine_dependency=lambda: reader))
    response = anonymous.get(path)
    assert response.status_code == 401
    assert "Not authenticated" in response.text
    browser = anonymous.get(path, headers={"Accept": "text/html"})
    assert browser.status_code == 401 and "Sign in first" in browser.text


def test_flagged_runs_are_listed_with_their_reason_and_kept_in_the_means(signed_in, reader) -> None:
    # The synthetic history's hiccups (3 % of runs, 30 % slower) are what gets flagged.
    flagged_days = [
        day_of(n) for n in range(1, 31) if not data.flagged_runs(reader, SYNTHETIC, day_of(n)).empty
    ]
    assert flagged_days
    day = flagged_days[0]
    flagged = data.flagged_runs(reader, SYNTHETIC, day)
    page = signed_in.get("/", params={"environment": SYNTHETIC, "date": str(day)})
    assert page.status_code == 200
    body = page.text
    assert "Means over every positive measured run" in body
    assert f"Runs flagged by the deviation check · {day}" in body
    reason = flagged.iloc[0]["reason"]
    assert "deviates from the median" in reason and reason in body
    assert '<td class="text">yes</td>' in body  # kept in the means
    assert not flagged["flagged_excluded"].any()


def test_an_unmigrated_database_gets_a_page_naming_the_mend(fresh_database, page_database) -> None:
    # page_database made the reader role (cluster-wide); this database has no tables.
    unmigrated = data.reader_engine(fresh_database("meshbench_unmigrated"))
    app = create_app(engine_dependency=lambda: unmigrated)
    app.dependency_overrides[require_results_access] = lambda: None
    try:
        client = TestClient(app)
        page = client.get("/", headers={"accept": "text/html"})
        assert page.status_code == 503
        assert page.headers["content-type"].startswith("text/html")
        assert "The results database cannot be read" in page.text
        assert "<code>meshbench db upgrade</code>" in page.text
        assert "does not exist" in page.text
        api = client.get("/", headers={"accept": "application/json"})
        assert api.status_code == 503
        assert "meshbench db upgrade" in api.json()["detail"]
    finally:
        unmigrated.dispose()
