"""Running the aws tasks' ops: each pairs the plan's step with the AWS calls that carry it out.

create_clusters and delete_clusters reach no Kubernetes cluster, so their ops run against an
empty set of clusters: an op that asked for one would fail instead of opening a kubeconfig
the plan does not show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshbench.kube.cluster import Clusters
from meshbench.kube.ops import Op, run_ops
from meshbench.kube.runner import CommandRunner

CREATE = "create_clusters"
PREPARE = "prepare_pair"
DELETE = "delete_clusters"


def run_without_clusters(ops: Sequence[Op], runner: CommandRunner) -> dict[str, Any]:
    with Clusters({}, runner) as clusters:
        return run_ops(ops, clusters)


def states_a_fact(clusters: Clusters) -> None:
    """The action of a step that tells the reader how the run behaves (what a Service gets,
    what is kept) without calling anything itself."""
