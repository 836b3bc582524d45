"""Teardown of an aws run: the mesh's pair cleanup runs, best effort, before the clusters go."""

from __future__ import annotations

import pytest

from meshbench.environments.aws import AwsProvider, build_backend
from meshbench.kube.ops import Op
from tests.cloud.conftest import run_context


class Unreachable(Exception):
    pass


@pytest.mark.parametrize("cleanup_fails", [False, True])
def test_delete_clusters_runs_the_mesh_cleanup_then_deletes_the_clusters(
    moto, aws_config, monkeypatch, cleanup_fails: bool
) -> None:
    backend = build_backend(aws_config, "istio")
    ctx = run_context(aws_config, "aws", mesh="istio")
    assert isinstance(backend.source, AwsProvider)
    backend.source.create(ctx)
    cleanup = backend.installer.cleanup_pair_ops(ctx)
    assert cleanup, "istio's prepare_pair leaves something to clean up"
    ran: list[list[Op]] = []

    def run(_ctx, ops: list[Op]) -> dict:
        ran.append(ops)
        if len(ran) == 1:  # the run namespace first: its removal failing stops nothing
            raise Unreachable("the run namespace did not go")
        if cleanup_fails:
            raise Unreachable("the cluster API does not answer")
        return {}

    monkeypatch.setattr(backend, "_run", run)
    used = backend.delete_clusters(ctx)

    assert [op.step for op in ran[-1]] == [op.step for op in cleanup]
    assert len(ran) == 2
    assert (
        used["mesh_cleanup"].startswith("not done")
        if cleanup_fails
        else used["mesh_cleanup"] == "done"
    )
    assert used["deleted"] == {
        name: "deleted" for name in backend.source.cluster_names(ctx).values()
    }
    assert moto.client("eks").list_clusters()["clusters"] == []
