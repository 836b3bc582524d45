"""Names the DAG, the pipeline steps, the backends and the mesh installers must agree on.

A step's ``phase`` is the DAG task it runs in; the plan, the artifact folders and the
Airflow task ids are all spelled from these, so they are defined once here.
"""

from __future__ import annotations

# The two clusters (or local network namespaces) of a benchmark: the load generator runs
# in the client, the measured service in the server.
ROLES = ("client", "server")


def iteration_group(iteration: int) -> str:
    """The DAG task group of one iteration (``iteration_01``)."""
    return f"iteration_{iteration:02d}"


def iteration_task_id(iteration: int, step: str) -> str:
    """The DAG task id of one iteration's step (``iteration_01.install_mesh``)."""
    return f"{iteration_group(iteration)}.{step}"
