"""Reaching an EKS cluster with a per-task kubeconfig."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from meshbench.environments.aws.constants import (
    RESOURCE_NOT_FOUND,
    error_code,
)
from meshbench.kube.access import ClusterAccess, ClusterAccessError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _interpreter_first_on_path() -> Iterator[None]:
    """The EKS kubeconfig's exec plugin runs a bare ``python3.X``: make it this venv's."""
    folder = os.path.dirname(sys.executable)
    before = os.environ.get("PATH", "")
    if before.split(os.pathsep)[:1] == [folder]:
        yield
        return
    os.environ["PATH"] = os.pathsep.join([folder, before]) if before else folder
    try:
        yield
    finally:
        os.environ["PATH"] = before


class EksClusterAccess(ClusterAccess):
    """An EKS cluster reached with a kubeconfig the provider's EksHook makes per task.

    The kubeconfig's exec plugin reads a temporary credentials file written from the
    Airflow connection; both files exist only inside :meth:`open`.
    """

    def __init__(self, role: str, cluster_name: str, aws_conn_id: str, region: str) -> None:
        super().__init__(role)
        self.cluster_name = cluster_name
        self.aws_conn_id = aws_conn_id
        self.region = region

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "kubeconfig_source": "eks",
            "cluster": self.cluster_name,
            "region": self.region,
            "aws_conn_id": self.aws_conn_id,
        }

    def kubeconfig(self) -> dict[str, Any]:
        raise ClusterAccessError(
            f"{self.role} cluster: an EKS kubeconfig is only valid inside open(), which keeps "
            f"its credentials file alive"
        )

    @contextlib.contextmanager
    def open(self) -> Iterator[str]:
        from airflow.providers.amazon.aws.hooks.eks import EksHook

        hook = EksHook(aws_conn_id=self.aws_conn_id, region_name=self.region)
        try:
            context = hook.generate_config_file_with_credentials(
                eks_cluster_name=self.cluster_name, pod_namespace=None
            )
            with _interpreter_first_on_path(), context as (config_path, _credentials_path):
                yield config_path
        except ClusterAccessError:
            raise
        except Exception as exc:
            if error_code(exc) == RESOURCE_NOT_FOUND:
                raise ClusterAccessError(
                    f"{self.role} cluster: EKS cluster {self.cluster_name!r} does not exist"
                ) from None
            raise
