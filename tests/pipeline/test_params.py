"""Trigger parameters: refused in words before a run starts, by the API server and by the run."""

from __future__ import annotations

import json
from datetime import date

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from meshbench.config import load_config
from meshbench.pipeline.params import TriggerParamsInvalid, check_trigger
from meshbench.pipeline.steps import Pipeline, TaskRun
from meshbench.ui.trigger_check import TriggerParamsMiddleware
from tests.pipeline.replay_backend import ReplayBackend

DAG_ID = "meshbench_local_baseline"


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"duration": "0s"}, "duration must be a positive length of time such as 30s"),
        ({"duration": "0m0.0s"}, "not '0m0.0s'"),
        ({"duration": "soon"}, "duration must be a positive length of time"),
        ({"bogus": 1}, "unknown parameter 'bogus': this DAG takes only iterations,"),
        ({"iterations": 0}, "iterations must be at least 1, not 0"),
        ({"connections": "four"}, "connections must be a whole number, not 'four'"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(conf, message) -> None:
    with pytest.raises(TriggerParamsInvalid, match=message) as raised:
        check_trigger(load_config(), DAG_ID, conf)
    assert "^(" not in str(raised.value)  # no regular expression in what users read


def test_good_parameters_pass() -> None:
    check_trigger(load_config(), DAG_ID, {"duration": "1.5s", "iterations": 1, "qps": 0})
    check_trigger(load_config(), DAG_ID, None)
    check_trigger(load_config(), "another_dag", {"anything": 1})  # not a benchmark DAG


def _app(seen: list) -> TestClient:
    async def trigger(request: Request) -> JSONResponse:
        seen.append(await request.json())
        return JSONResponse({"state": "queued"})

    app = Starlette(
        routes=[
            Route("/api/v2/dags/{dag_id}/dagRuns", trigger, methods=["POST"]),
            Route("/api/v2/backfills", trigger, methods=["POST"]),
        ]
    )
    app.add_middleware(TriggerParamsMiddleware)
    return TestClient(app)


def test_the_api_server_refuses_a_bad_trigger_before_airflow_sees_it() -> None:
    seen: list = []
    client = _app(seen)
    auth = {"Authorization": "Bearer x"}
    refused = client.post(
        f"/api/v2/dags/{DAG_ID}/dagRuns", json={"conf": {"bogus": 1}}, headers=auth
    )
    assert refused.status_code == 400
    assert "unknown parameter 'bogus'" in refused.json()["detail"]
    backfill = client.post(
        "/api/v2/backfills",
        json={"dag_id": DAG_ID, "dag_run_conf": {"duration": "0s"}},
        headers=auth,
    )
    assert backfill.status_code == 400 and "duration must be" in backfill.json()["detail"]
    assert seen == []

    good = {"conf": {"duration": "2s", "iterations": 1}, "logical_date": None}
    accepted = client.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json=good, headers=auth)
    assert accepted.status_code == 200 and seen == [good]  # the body reached the route whole
    # Without credentials Airflow answers (401 in Airflow; here the stand-in route).
    client.post(f"/api/v2/dags/{DAG_ID}/dagRuns", content=json.dumps({"conf": {"bogus": 1}}))
    assert seen[-1] == {"conf": {"bogus": 1}}


def test_a_run_started_past_the_api_fails_at_once_naming_the_parameter(tmp_path) -> None:
    config = load_config()
    backend = ReplayBackend(config)
    task = TaskRun(
        dag_id=DAG_ID,
        run_id="manual__cli",
        task_id="create_clusters",
        benchmark_date=date(2026, 1, 2),
        params={"bogus": 1},
    )
    with pytest.raises(TriggerParamsInvalid, match="unknown parameter 'bogus'"):
        Pipeline(config, "local", "baseline", task, backend=backend).run("create_clusters")
    assert backend.calls == []
    zero = TaskRun(**{**task.__dict__, "params": {"duration": "0s"}})
    with pytest.raises(TriggerParamsInvalid, match="trigger parameter duration '0s'"):
        Pipeline(config, "local", "baseline", zero, backend=backend)
