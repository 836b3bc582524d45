"""What every Kubernetes environment (existing, aws, capi) deploys and how long it waits."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from meshbench.config.common import QUANTITY, Duration, StrictModel


class ContainerResources(StrictModel):
    """Requests and limits of one workload container; equal requests and limits give the
    Guaranteed QoS class, so the node never squeezes a workload during a run."""

    cpu_request: str = Field("2", pattern=QUANTITY)
    cpu_limit: str = Field("2", pattern=QUANTITY)
    memory_request: str = Field("512Mi", pattern=QUANTITY)
    memory_limit: str = Field("512Mi", pattern=QUANTITY)


class KubernetesWorkload(StrictModel):
    image: str = Field(pattern=r"^[a-z0-9./_-]+(:[\w.-]+)?(@sha256:[0-9a-f]{64})?$")
    resources: ContainerResources = ContainerResources()


class MetricsServerSettings(StrictModel):
    """metrics-server, sampled during measured runs (see mesh-recipes.md section 6)."""

    install: Literal["if-missing", "never"] = Field(
        "if-missing", description="'never' fails the run when the metrics API is absent."
    )
    version: str | None = Field(
        None,
        pattern=r"^v\d+\.\d+\.\d+$",
        description="A fixed release; empty: the one ``releases`` gives the cluster's version.",
    )
    releases: dict[str, str] = Field(
        default_factory=lambda: {"1.27": "v0.7.2", "1.31": "v0.8.1", "1.34": "v0.9.0"},
        description="Lowest Kubernetes minor version -> release for it and later (the "
        "compatibility matrix of metrics-server's README).",
    )
    kubelet_insecure_tls: bool = Field(
        False, description="Needed where kubelet serving certificates are self-signed (kubeadm)."
    )
    sample_interval: Duration = Field(5.0, description="Polling period; metrics change every 15s.")
    cpu_limit_fraction: float = Field(
        0.9, gt=0, le=1, description="A container at this share of its CPU limit fails the run."
    )

    @field_validator("releases")
    @classmethod
    def _releases_are_versions(cls, value: dict[str, str]) -> dict[str, str]:
        for minor, release in value.items():
            if not re.fullmatch(r"\d+\.\d+", minor) or not re.fullmatch(r"v\d+\.\d+\.\d+", release):
                raise ValueError(f"releases: want '1.31': 'v0.8.1', got {minor!r}: {release!r}")
        if not value:
            raise ValueError("releases: at least one Kubernetes version and its release")
        return value

    def release_for(self, kubernetes_version: str) -> str:
        """The configured ``version``, else the release of the newest line whose lowest
        Kubernetes version is at most ``kubernetes_version`` ('1.35', 'v1.28.3')."""
        if self.version:
            return self.version
        found = re.match(r"v?(\d+)\.(\d+)", kubernetes_version.strip())
        if not found:
            raise ValueError(f"not a Kubernetes version: {kubernetes_version!r}")
        minor = (int(found.group(1)), int(found.group(2)))
        lines = sorted((tuple(int(p) for p in k.split(".")), v) for k, v in self.releases.items())
        fitting = [release for line, release in lines if line <= minor]
        if not fitting:
            lowest = ".".join(str(p) for p in lines[0][0])
            raise ValueError(
                f"kubernetes.metrics_server.releases has no release for Kubernetes "
                f"{kubernetes_version} (the lowest listed is {lowest})"
            )
        return fitting[-1]

    def for_kubernetes(self, kubernetes_version: str | None) -> MetricsServerSettings:
        """These settings with ``version`` chosen for the environment's Kubernetes version;
        unchanged when that is not configured (then the run chooses by the cluster's)."""
        if self.version or not kubernetes_version:
            return self
        return self.model_copy(update={"version": self.release_for(kubernetes_version)})


class ResourceCostSettings(StrictModel):
    """What each measured run cost on the nodes, from the kubelet's Summary API
    (``/api/v1/nodes/<node>/proxy/stats/summary``; RBAC ``get`` on ``nodes/proxy``)."""

    node_counters: bool = Field(
        True,
        description="Read the kubelet's cumulative CPU counters of the nodes on the path; "
        "off (or refused): containers' cost from metrics-server samples only.",
    )
    idle_seconds: Duration = Field(
        10.0,
        ge=0,
        description="Idle window right before each measured run: what the nodes use without "
        "load (kubelet, runtime, other pods) is measured here and subtracted from the run.",
    )
    fresh_stats_timeout: Duration = Field(
        40.0,
        gt=0,
        description="How long to wait after a run for counters stamped after its end "
        "(the kubelet refreshes them about every 10-15 s).",
    )


class KubernetesTimeouts(StrictModel):
    rollout: Duration = 300.0
    load_balancer: Duration = 600.0
    namespace_deletion: Duration = 300.0
    metrics_api: Duration = 180.0
    command: Duration = 600.0
    probe: Duration = Field(
        300.0, description="Until a request through the path returns 200 (cloud DNS is slow)."
    )


class KubernetesSettings(StrictModel):
    """What every Kubernetes environment (existing, aws, capi) deploys and how it waits."""

    nginx: KubernetesWorkload = KubernetesWorkload(image="nginx:1.23.3")
    fortio: KubernetesWorkload = KubernetesWorkload(image="fortio/fortio:1.40.0")
    metrics_server: MetricsServerSettings = MetricsServerSettings()
    resource_cost: ResourceCostSettings = ResourceCostSettings()
    timeouts: KubernetesTimeouts = KubernetesTimeouts()
    proxy_resources: ContainerResources = Field(
        ContainerResources(
            cpu_request="1", cpu_limit="1", memory_request="512Mi", memory_limit="512Mi"
        ),
        description="Every per-request proxy a mesh puts on the path (Istio and Kuma sidecars, "
        "east-west gateway, zone ingress, NSM forwarder and vl3 endpoint) gets these, whatever "
        "the mesh: the study removed CPU limits for some proxies only.",
    )
