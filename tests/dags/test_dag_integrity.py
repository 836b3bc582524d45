"""DAG integrity: the DAG folder imports cleanly and every DAG follows the house rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
DAGS = ROOT / "dags"


def dagbag(monkeypatch, tmp_path, config_path: Path | None = None):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    if config_path:
        monkeypatch.setenv("MESHBENCH_CONFIG", str(config_path))
    return DagBag(str(DAGS))


def everything_enabled(tmp_path) -> Path:
    """The packaged config with every environment enabled (cloud ones paused)."""
    document = yaml.safe_load((ROOT / "include/meshbench/benchmarks.yaml").read_text())
    for name, environment in document["environments"].items():
        environment["enabled"] = True
        if name != "local":
            environment["paused_on_creation"] = True
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(params=["packaged", "every-environment"])
def bag(request, monkeypatch, tmp_path):
    config = everything_enabled(tmp_path) if request.param == "every-environment" else None
    return dagbag(monkeypatch, tmp_path, config)


def test_no_import_errors(bag) -> None:
    assert bag.import_errors == {}
    assert "meshbench_aggregate" in bag.dags
    assert "meshbench_local_baseline" in bag.dags


def test_every_dag_follows_the_house_rules(bag) -> None:
    for dag_id, dag in bag.dags.items():
        assert dag.tags and "meshbench" in dag.tags, dag_id
        assert dag.catchup is False, dag_id
        assert type(dag.timetable).__name__ != "NullTimetable", f"{dag_id} has no schedule"
        assert dag.doc_md and len(dag.doc_md) > 100, dag_id
        assert dag.max_active_runs == 1, dag_id
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", (dag_id, task.task_id)
            assert task.retries is not None, (dag_id, task.task_id)
            assert task.pool and task.pool != "default_pool", (dag_id, task.task_id)


def test_setups_and_teardowns_are_paired(bag) -> None:
    for dag_id, dag in bag.dags.items():
        for task in dag.tasks:
            if task.is_teardown:
                setups = [t for t in task.upstream_list if t.is_setup]
                assert setups, f"{dag_id}.{task.task_id} is a teardown without a setup"
            if task.is_setup:
                teardowns = [t for t in task.downstream_list if t.is_teardown]
                assert teardowns, f"{dag_id}.{task.task_id} is a setup without a teardown"


def test_benchmark_dag_shape(monkeypatch, tmp_path) -> None:
    bag = dagbag(monkeypatch, tmp_path, everything_enabled(tmp_path))
    dag = bag.dags["meshbench_local_envoy-mtls"]
    task = dag.get_task
    assert task("create_clusters").is_setup
    assert task("delete_clusters").is_teardown
    assert task("iteration_01.install_mesh").is_setup
    assert task("iteration_01.uninstall_mesh").is_teardown
    assert task("iteration_02.install_mesh").upstream_task_ids == {"iteration_01.uninstall_mesh"}
    assert task("load_results").upstream_task_ids == {"delete_clusters", "create_clusters"}
    # A teardown: a run marked failed by hand still loads its results, then ends failed.
    assert task("load_results").is_teardown
    assert task("load_results").outlets
    assert set(dag.params.keys()) >= {"iterations", "duration", "connections", "qps"}
    # Every DAG starts paused: a first start of the UI must not begin an hour of benchmarks.
    assert dag.is_paused_upon_creation
    for environment in ("existing", "aws", "capi"):
        cloud = bag.dags[f"meshbench_{environment}_baseline"]
        assert cloud.is_paused_upon_creation, environment
    assert (
        "mesh_version" in bag.dags["meshbench_existing_istio"].params
        if ("meshbench_existing_istio" in bag.dags)
        else True
    )
    local_task = task("iteration_01.measure")
    assert local_task.pool == "meshbench_local" and local_task.queue == "meshbench_local"


@pytest.mark.slow
def test_importing_the_dag_folder_opens_no_connection_or_process(tmp_path) -> None:
    """Parse the DAG folder in a fresh interpreter where sockets and processes are forbidden."""
    script = textwrap.dedent(f"""
        import json, os, socket, subprocess, sys
        os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        os.environ["AIRFLOW_HOME"] = {str(tmp_path / "airflow")!r}
        from airflow.dag_processing.dagbag import DagBag  # Airflow's own start-up is allowed
        attempts = []
        def forbid(what):
            def blocked(*args, **kwargs):
                attempts.append(what)
                raise RuntimeError(what + " attempted while importing DAG files")
            return blocked
        socket.socket.connect = forbid("socket connect")
        socket.create_connection = forbid("socket connect")
        subprocess.Popen.__init__ = forbid("subprocess")
        os.fork = forbid("fork")
        bag = DagBag({str(DAGS)!r})
        print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                           "dags": sorted(bag.dags), "attempts": attempts}}))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["errors"] == {}
    assert len(report["dags"]) >= 4


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="Debian's docker-compose is not installed (make install adds it)",
)
def test_docker_compose_file_validates() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
