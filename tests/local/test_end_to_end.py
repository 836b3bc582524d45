"""Every local mesh end to end on real namespaces, nginx, Envoy, wireguard-go and wrk,
loaded into a real Postgres; then nothing of the run may be left on the machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from meshbench.backend import PHASE_MEASURED, PHASE_PAIRED_BASELINE
from meshbench.local import netns
from meshbench.local.backend import LocalBackend
from meshbench.local.reaper import find_leftovers
from meshbench.local.runner import LocalRun, run_local
from meshbench.results import migrate
from tests.local.conftest import local_config, make_context, needs_netns, short_profile

pytestmark = [pytest.mark.netns, pytest.mark.postgres, pytest.mark.slow]

MESHES = ("baseline", "envoy-mtls", "wireguard")


def assert_nothing_left(run: LocalRun) -> None:
    assert run.topology is not None
    assert run.teardown_problems == []
    assert run.started_processes, "the run recorded the processes it started"
    assert find_leftovers(run.topology, run.started_processes) == []
    prefix = run.ctx.resource_prefix
    assert [name for name in netns.list_namespaces() if name.startswith(prefix)] == []


@pytest.fixture(scope="module")
def local_results(fresh_database) -> Iterator[Engine]:
    """A results database of this module's own, which its runs are loaded into."""
    engine = create_engine(fresh_database(), future=True)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, local_results: Engine) -> dict[str, LocalRun]:
    """One short run per mesh, made and loaded once for this module's tests."""
    state_root = tmp_path_factory.mktemp("local-state")
    made = {}
    for mesh in MESHES:
        config = local_config(network_mode="netns")
        ctx = make_context(
            config, mesh, short_profile(warmup=mesh == "baseline", warmup_duration=1.0)
        )
        backend = LocalBackend(config, mesh, state_root=state_root)
        made[mesh] = run_local(backend, ctx, engine=local_results)
    return made


@needs_netns
@pytest.mark.parametrize("mesh", MESHES)
def test_mesh_runs_end_to_end_and_leaves_nothing(runs: dict[str, LocalRun], mesh: str) -> None:
    run = runs[mesh]
    assert run.failures == {}
    phases = [(m.phase, m.run_index) for m in run.measurements]
    expected = [(PHASE_MEASURED, 1)]
    if mesh != "baseline":
        expected = [(PHASE_PAIRED_BASELINE, 1), (PHASE_MEASURED, 1)]
    else:
        expected = [("warmup", 1), *expected]
    assert phases == expected
    for measurement in run.measurements:
        outcome = measurement.outcome
        assert outcome.failure is None, outcome.failure
        context = outcome.context
        assert context["network_mode"] == "netns"
        assert context["load_generator"].startswith("wrk ")
        assert context["load_mode"] == "back-to-back"
        assert 0.0 <= context["machine"]["cpu_idle_fraction"] <= 1.0
        assert "load_average_1m_after" in context["machine"]
        assert {"nginx", "wrk"} <= set(context["versions"])
        raw = outcome.raw_result
        assert raw is not None
        assert raw["SocketCount"] == 1  # c=1 and nginx never closes the keep-alive connection
        assert raw["RetCodes"] == {"200": raw["DurationHistogram"]["Count"]}
    measured = run.measured[0].outcome
    assert measured.context["path"] == ("direct" if mesh == "baseline" else mesh)
    cost = measured.context["resources"]
    mesh_roles = {
        "baseline": set(),
        "envoy-mtls": {"client proxy", "gateway", "server proxy"},
        "wireguard": {"tunnel"},
    }[mesh]
    assert {c["role"] for c in cost["components"]} == {"load generator", "server app"} | mesh_roles
    assert cost["requests"] > 0 and cost["machine"]["busy_seconds"] > 0
    assert 0 < cost["attributed_share"] <= 1
    assert all(c["cpu_seconds"] >= 0 for c in cost["components"])
    assert all(c["peak_memory_bytes"] > 0 for c in cost["components"][1:])  # not wrk's
    if mesh_roles:
        assert cost["mesh_cpu_seconds_per_1000_requests"] > 0
    if mesh == "envoy-mtls":
        assert {"envoy"} <= set(measured.context["versions"])
        assert measured.raw_result["URL"].endswith(":15001/")
    if mesh == "wireguard":
        assert {"wireguard-go", "wg"} <= set(measured.context["versions"])
        assert measured.raw_result["URL"].startswith("http://198.19.")
    assert_nothing_left(run)


@needs_netns
def test_results_load_as_positive_measurements(
    runs: dict[str, LocalRun], local_results: Engine
) -> None:
    for mesh, run in runs.items():
        assert run.loaded is not None and run.state == "success", (mesh, run.task_states)
        negatives = run.loaded["negatives"]
        assert negatives == [] or all("warmup" in n for n in negatives), (mesh, negatives)
        with local_results.connect() as connection:
            stored, positive = connection.execute(
                text(
                    "SELECT count(*), count(*) FILTER (WHERE positive) FROM measurement "
                    "WHERE run_id = :run"
                ),
                {"run": run.loaded["run_id"]},
            ).one()
        judged = [m for m in run.measurements if m.phase != "warmup"]
        assert stored == len(run.measurements)
        assert positive >= len(judged)
    with local_results.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT r.mesh, m.phase, m.positive, m.avg_ms, m.request_count, m.socket_count, "
                "m.load_generator FROM measurement m JOIN run r ON r.id = m.run_id "
                "WHERE m.phase <> 'warmup'"
            )
        ).all()
    assert {row.mesh for row in rows} == set(MESHES)
    assert all(row.positive for row in rows)
    assert all(row.request_count > 0 and row.socket_count == 1 for row in rows)
    assert all(row.load_generator.startswith("wrk") for row in rows)
    average = {row.mesh: row.avg_ms for row in rows if row.phase == PHASE_MEASURED}
    # A property of the data, not a fixed number: no data plane is faster than no data plane.
    assert average["baseline"] < average["envoy-mtls"]
    assert average["baseline"] < average["wireguard"]


@needs_netns
def test_cli_runs_a_mesh_prints_the_table_and_loads_it(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    clean_results: Engine,
) -> None:
    from meshbench.cli import main

    monkeypatch.setenv("MESHBENCH_STATE", str(tmp_path))
    monkeypatch.setenv(
        "MESHBENCH_DATABASE_URL", clean_results.url.render_as_string(hide_password=False)
    )
    code = main(["local", "run", "--mesh", "baseline", "--duration", "3s", "--no-warmup", "--load"])
    out = capsys.readouterr().out
    assert "local measurements" in out
    assert "positive" in out
    assert "1 positive, 0 negative" in out
    assert code == 0
    # The run's folder is gone after teardown; only its summary (what ran) stays.
    left = list(tmp_path.joinpath("local").iterdir())
    assert [path for path in left if path.is_dir()] == []
    assert all(path.name.endswith(".summary.json") for path in left)
    with clean_results.connect() as connection:
        row = connection.execute(
            text(
                "SELECT r.environment, r.mesh, m.phase, m.positive FROM measurement m "
                "JOIN run r ON r.id = m.run_id"
            )
        ).one()
    assert tuple(row) == ("local", "baseline", "measured", True)
