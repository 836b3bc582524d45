"""Airflow plugin: the meshbench results page (a FastAPI app and a navigation entry), and
the check of the benchmark DAGs' trigger parameters (an API-server middleware).

Wiring only; the page lives in meshbench.ui.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from meshbench.ui.app import URL_PREFIX, create_app
from meshbench.ui.trigger_check import TriggerParamsMiddleware


class MeshbenchResultsPlugin(AirflowPlugin):
    name = "meshbench_results"
    fastapi_apps = [  # noqa: RUF012
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "meshbench results"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "meshbench results",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "meshbench-results",
        }
    ]
    # Trigger and backfill requests of the benchmark DAGs: parameters checked in words.
    fastapi_root_middlewares = [  # noqa: RUF012
        {"middleware": TriggerParamsMiddleware, "name": "meshbench trigger parameters"}
    ]
