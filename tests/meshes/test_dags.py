"""The DAG factory builds one DAG per mesh for the existing environment, with the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).parents[2] / "dags"


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
    monkeypatch.delenv("MESHBENCH_CONFIG", raising=False)
    try:
        yield DagBag(str(DAGS))
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("mesh", ["istio", "kuma", "nsm"])
def test_existing_environment_has_a_dag_per_mesh_with_its_plan(bag, mesh: str):
    assert bag.import_errors == {}
    dag = bag.dags[f"meshbench_existing_{mesh}"]
    assert dag.is_paused_upon_creation
    assert "could not be rendered" not in dag.doc_md
    assert "install_mesh" in dag.doc_md and "uninstall_mesh" in dag.doc_md
    assert dag.params["mesh_version"] is not None
    assert dag.get_task("iteration_01.install_mesh").is_setup
    assert dag.get_task("iteration_01.uninstall_mesh").is_teardown
