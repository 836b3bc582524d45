"""The reaper DAG through Airflow (``dag.test()`` in a fresh interpreter with its own
metadata database) against moto: a dry run deletes nothing, a real run removes the leaked
clusters and keeps the fresh ones; an environment without its connection is skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from meshbench.environments.aws import TAG_CREATED_AT, AwsProvider
from meshbench.environments.provider import isoformat, utcnow
from meshbench.environments.reaper import task_run_state
from tests.cloud.conftest import AWS_CONN_ID, run_context

ROOT = Path(__file__).parents[2]

DAG_TEST = textwrap.dedent(
    """
    import json, os, sys
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], "meshbench_reaper.py"))
    assert not bag.import_errors, bag.import_errors
    run = bag.dags["meshbench_reaper"].test(run_conf={"dry_run": sys.argv[1] == "dry"})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print("RESULT " + json.dumps({"run": str(run.state), "tasks": states}))
    """
)


def run_reaper_dag(env: dict[str, str], mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", DAG_TEST, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.mark.airflow
@pytest.mark.slow
def test_reaper_dag_spares_fresh_clusters_and_removes_leaked_ones(
    moto, aws_config, tmp_path
) -> None:
    document = yaml.safe_load((ROOT / "include/meshbench/benchmarks.yaml").read_text())
    document["environments"]["aws"].update(
        {"aws_conn_id": AWS_CONN_ID, "waiter_delay": 1, "waiter_max_attempts": 5}
    )
    config_path = tmp_path / "benchmarks.yaml"
    config_path.write_text(yaml.safe_dump(document))

    provider = AwsProvider(aws_config)
    leaked = run_context(aws_config, "aws", run_id="scheduled__2026-11-20T00:00:00+00:00")
    fresh = run_context(aws_config, "aws")
    provider.create(leaked)
    provider.create(fresh)
    eks = moto.client("eks")
    for name in provider.cluster_names(leaked).values():
        arn = eks.describe_cluster(name=name)["cluster"]["arn"]
        eks.tag_resource(
            resourceArn=arn, tags={TAG_CREATED_AT: isoformat(utcnow() - timedelta(days=1))}
        )
    everything = set(provider.cluster_names(leaked).values()) | set(
        provider.cluster_names(fresh).values()
    )

    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MESHBENCH_CONFIG": str(config_path),
        "PYTHONWARNINGS": "ignore",
    }
    migrate = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]

    dry = run_reaper_dag(env, "dry")
    assert dry == {"run": "success", "tasks": {"reap_aws": "success", "reap_capi": "skipped"}}
    assert set(eks.list_clusters()["clusters"]) == everything

    real = run_reaper_dag(env, "real")
    assert real["tasks"] == {"reap_aws": "success", "reap_capi": "skipped"}
    assert set(eks.list_clusters()["clusters"]) == set(provider.cluster_names(fresh).values())


def test_run_states_come_from_the_task_instance() -> None:
    class TaskInstance:
        @staticmethod
        def get_dagrun_state(dag_id: str, run_id: str) -> str:
            return {"d/r": "failed"}.get(f"{dag_id}/{run_id}", "")

    lookup = task_run_state(TaskInstance())
    assert lookup("d", "r") == "failed"
    assert lookup("d", "other") is None
