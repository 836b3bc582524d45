"""The Cluster API providers in the management cluster: which, and ``clusterctl init``."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from meshbench.backend import StepFailed
from meshbench.environments.capi.management import MANAGEMENT, CapiBase
from meshbench.kube.api import KubeApi
from meshbench.kube.cluster import Clusters
from meshbench.kube.ops import Op, call_op
from meshbench.kube.redact import MASK, format_command
from meshbench.kube.waits import Readiness

log = logging.getLogger(__name__)


PROVIDER_API = "clusterctl.cluster.x-k8s.io/v1alpha3"
# Where each provider's controllers run once ``clusterctl init`` is done.
PROVIDER_TYPES = {
    "CoreProvider": "cluster-api",
    "BootstrapProvider": "kubeadm",
    "ControlPlaneProvider": "kubeadm",
}


def provider_state(api: KubeApi, wanted: dict[str, tuple[str, str]]) -> Readiness:
    """Whether the management cluster has each wanted provider type at its version."""
    installed = {
        (item.get("type"), item.get("providerName")): item.get("version")
        for item in api.list(PROVIDER_API, "Provider")
    }
    pending = []
    for provider_type, (name, version) in wanted.items():
        found = installed.get((provider_type, name))
        if found is None:
            pending.append(f"{provider_type} {name} is not installed")
        elif found != version:
            pending.append(f"{provider_type} {name} is {found}, not {version}")
    return Readiness(not pending, tuple(pending), installed)


class ClusterApiProviders(CapiBase):
    """The Cluster API providers the management cluster needs, installed when missing."""

    @property
    def wanted_providers(self) -> dict[str, tuple[str, str]]:
        core = self.env.core_version
        return {
            **{kind: (name, core) for kind, name in PROVIDER_TYPES.items()},
            "InfrastructureProvider": (
                self.env.infrastructure_provider,
                self.env.infrastructure_version,
            ),
        }

    def init_args(self) -> list[str]:
        core = self.env.core_version
        return [
            "init",
            "--core",
            f"cluster-api:{core}",
            "--bootstrap",
            f"kubeadm:{core}",
            "--control-plane",
            f"kubeadm:{core}",
            "--infrastructure",
            f"{self.env.infrastructure_provider}:{self.env.infrastructure_version}",
            "--wait-providers",
        ]

    def _ensure_providers(self, clusters: Clusters) -> dict[str, Any]:
        management = clusters[MANAGEMENT]
        state = provider_state(management.api, self.wanted_providers)
        if state.ready:
            log.info("Cluster API providers already installed: %s", state.value)
            return {"providers": "present"}
        missing = [line for line in state.pending if "is not installed" in line]
        if len(missing) != len(state.pending):
            # Another version is installed; upgrading a shared management cluster is not
            # this pipeline's call.
            raise StepFailed(
                "management cluster has other provider versions: "
                + "; ".join(state.pending)
                + " (upgrade with clusterctl upgrade, or change the versions in the config)"
            )
        credentials = self._credentials()
        runner = dataclasses.replace(
            management.runner,
            env={**management.runner.env, self.env.credentials_env_var: credentials.api_key},
        ).with_secrets([credentials.api_key])
        runner.run("clusterctl", self.init_args(), timeout=self.env.cluster_ready_timeout)
        after = provider_state(management.api, self.wanted_providers)
        if not after.ready:
            raise StepFailed("after clusterctl init: " + "; ".join(after.pending))
        return {"providers": "installed"}

    def providers_op(self) -> Op:
        env = self.env
        init_line = format_command(["clusterctl", *self.init_args()])
        return call_op(
            "create_clusters",
            MANAGEMENT,
            "command",
            "Install the Cluster API providers unless the management cluster has them "
            f"(core {env.core_version}, kubeadm bootstrap and control plane "
            f"{env.core_version}, {env.infrastructure_provider} "
            f"{env.infrastructure_version})",
            self._ensure_providers,
            f"GET {PROVIDER_API} Provider (all namespaces)\n"
            f"if missing: {env.credentials_env_var}={MASK} {init_line}\n"
            f"({env.credentials_env_var} from connection {env.credentials_conn_id!r})",
        )
