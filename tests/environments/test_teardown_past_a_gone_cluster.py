"""uninstall_mesh and delete_clusters on the Kubernetes environments go on past a cluster
that cannot be reached: every namespace removal and the mesh's own teardown are tried, in
the plan's order, and the task fails once all were, naming what failed."""

from __future__ import annotations

import pytest

from meshbench.backend import StepFailed
from meshbench.cli.plan import placeholder_context
from meshbench.config import load_config
from meshbench.registry import get_backend

GONE = "client"


@pytest.fixture
def backend_and_ran(monkeypatch):
    config = load_config()
    backend = get_backend(config, "existing", "istio")
    ran: list[str] = []

    def run(ctx, ops):
        for op in ops:
            if op.step.cluster == GONE:
                raise StepFailed(f"{op.step.description} [{GONE}]: the API server does not answer")
            ran.append(f"{op.step.description} [{op.step.cluster}]")
        return {}

    monkeypatch.setattr(backend, "_run", run)
    return backend, placeholder_context(config, "existing", "istio"), ran


def test_uninstall_runs_every_step_of_the_reachable_cluster(backend_and_ran) -> None:
    backend, ctx, ran = backend_and_ran
    with pytest.raises(StepFailed, match="does not answer") as failed:
        backend.uninstall_mesh(ctx, 1)
    planned = backend.uninstall_ops(ctx, 1)
    namespace_removals = [
        op for op in planned if op.step.description.startswith("delete namespace")
    ]
    reachable = [
        f"{op.step.description} [{op.step.cluster}]"
        for op in namespace_removals
        if op.step.cluster != GONE
    ]
    assert ran[: len(reachable)] == reachable
    # The mesh's own teardown was tried after them, past the gone cluster's failures (each of
    # its steps is best-effort inside: the installer's tests cover that part).
    first = backend.installer.uninstall_ops(ctx, 1)[0]
    tried = f"{first.step.description} [{first.step.cluster}]"
    assert tried in ran or tried in str(failed.value)
    assert str(failed.value).count("does not answer") >= sum(
        1 for op in namespace_removals if op.step.cluster == GONE
    )


def test_delete_clusters_removes_the_reachable_clusters_namespaces(backend_and_ran) -> None:
    backend, ctx, ran = backend_and_ran
    with pytest.raises(StepFailed, match="does not answer"):
        backend.delete_clusters(ctx)
    removed = [line for line in ran if line.startswith("delete namespace")]
    assert removed and all(line.endswith("[server]") for line in removed)
    assert len(removed) == len(backend._namespaces(ctx))
