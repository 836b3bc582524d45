"""The benchmark matrix, read from ``benchmarks.yaml`` into typed, validated models.

Every validation error names the file, the dotted field path and the offending value, so
a performance engineer can fix a typo without reading this module.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path(__file__).with_name("benchmarks.yaml")
CONFIG_ENV_VAR = "MESHBENCH_CONFIG"
# Runs every environment with one named load profile (``make run`` uses ``demo``).
LOAD_PROFILE_ENV_VAR = "MESHBENCH_LOAD_PROFILE"

# The benchmarking range of RFC 2544; private ranges are never used for emulated clusters.
BENCHMARK_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")

ENVIRONMENT_NAMES = ("local", "existing", "aws", "capi")
MESH_NAMES = ("baseline", "envoy-mtls", "wireguard", "istio", "kuma", "nsm")
VERSIONED_MESHES = ("istio", "kuma", "nsm")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SLUG = r"^[a-z][a-z0-9_-]*$"


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message lists every problem found."""


def parse_duration(value: Any) -> float:
    """Seconds from a number or a Go-style duration string such as ``60s``, ``1m30s``, ``500ms``."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as '60s' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text or _DURATION_PART.sub("", text) != "":
            raise ValueError("must be a duration such as '60s', '1m30s' or '500ms'")
        seconds = sum(
            float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text)
        )
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        raise ValueError("must be a duration such as '60s' or a number of seconds")
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The Go duration string Fortio expects (``60s``, ``1.5s``)."""
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt setting must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LoadProfile(StrictModel):
    """How one mesh is loaded: the study's Fortio settings plus the repetition plan."""

    qps: int = Field(6000, ge=0, description="Requested QPS; 0 asks for as fast as possible.")
    connections: int = Field(1, ge=1, le=1024)
    duration: Duration = Field(60.0, description="Length of each measured run.")
    warmup: bool = Field(True, description="Run one identical, discarded run first.")
    warmup_duration: Duration | None = Field(None, description="Defaults to `duration`.")
    runs_per_iteration: int = Field(3, ge=1, le=100)
    iterations: int = Field(5, ge=1, le=99)
    min_positive: int = Field(10, ge=0, description="Fewer positive measured runs fail the run.")
    histogram_resolution: float = Field(0.00005, gt=0, le=0.01, description="Seconds.")
    duration_tolerance: float = Field(
        0.05, gt=0, lt=1, description="Largest accepted relative gap between actual and requested."
    )

    @model_validator(mode="after")
    def _min_positive_reachable(self) -> LoadProfile:
        planned = self.iterations * self.runs_per_iteration
        if self.min_positive > planned:
            raise ValueError(
                f"min_positive ({self.min_positive}) exceeds the {planned} measured runs planned "
                f"(iterations {self.iterations} × runs_per_iteration {self.runs_per_iteration})"
            )
        return self

    @property
    def effective_warmup_duration(self) -> float:
        return self.warmup_duration or self.duration


class Pool(StrictModel):
    """An Airflow pool: benchmarks that share machines must never overlap."""

    name: str = Field(pattern=_SLUG)
    slots: int = Field(1, ge=1, le=64)


class EnvironmentBase(StrictModel):
    enabled: bool = True
    meshes: list[str] = Field(default_factory=list)
    pool: Pool
    paired_baseline: bool = Field(
        True,
        description="Measure the no-mesh path between the same clusters right before each of "
        "a mesh's measured runs (B1 M1 B2 M2 ...): the added latency and QPS ratio.",
    )
    paused_on_creation: bool = True
    load_profile: str | None = Field(None, description="Overrides defaults.load_profile.")
    version_profile: str | None = Field(None, description="Overrides defaults.version_profile.")
    schedule: str | None = Field(None, description="Overrides defaults.schedule.")
    kubernetes_version: str | None = None

    @field_validator("meshes")
    @classmethod
    def _known_meshes(cls, meshes: list[str]) -> list[str]:
        for mesh in meshes:
            if mesh not in MESH_NAMES:
                raise ValueError(f"unknown mesh {mesh!r}; known meshes: {', '.join(MESH_NAMES)}")
        if len(set(meshes)) != len(meshes):
            raise ValueError("lists a mesh twice")
        return meshes

    @field_validator("kubernetes_version")
    @classmethod
    def _minor_version(cls, version: str | None) -> str | None:
        if version is not None and not re.fullmatch(r"v?1\.\d{1,2}(\.\d+)?", version):
            raise ValueError("must be a Kubernetes version such as '1.28' or 'v1.28.3'")
        return version


class LocalEnvironment(EnvironmentBase):
    """Two emulated clusters on this machine: network namespaces, or loopback without root."""

    network_mode: Literal["auto", "netns", "loopback"] = "auto"
    subnet: ipaddress.IPv4Network = BENCHMARK_NETWORK
    queue: str = Field("meshbench_local", pattern=_SLUG)
    # Paused on creation like the others: a first start of Airflow runs nothing long.
    paused_on_creation: bool = True
    paired_baseline: bool = True
    cpu_placement: Literal["shared", "split", "none"] = Field(
        "shared",
        description="'shared': both clusters on one CPU (stable on small VMs: no cross-CPU "
        "wake-ups); 'split': client cluster on one CPU, server cluster on another; 'none': "
        "the scheduler decides. Recorded with every result.",
    )
    status_codes: Literal["counted", "inferred"] = Field(
        "inferred",
        description="'inferred': wrk counts answers with a code >= 400 (their codes are not "
        "kept); the rest are 200s, the only code below 400 the generated configs answer, "
        "checked against the first hop's own counter. 'counted': a Lua callback counts every "
        "code (about 3.5 % fewer QPS on the fastest path at c=1).",
    )
    ready_timeout: Duration = Field(
        30.0, description="Bounded wait for each component and the probe through the path."
    )

    @field_validator("subnet", mode="before")
    @classmethod
    def _benchmark_range(cls, value: Any) -> Any:
        try:
            network = ipaddress.IPv4Network(str(value), strict=False)
        except ValueError as exc:
            raise ValueError(f"is not an IPv4 network: {exc}") from None
        if not network.subnet_of(BENCHMARK_NETWORK):
            raise ValueError(f"must lie inside the benchmarking range {BENCHMARK_NETWORK}")
        if network.prefixlen > 24:
            raise ValueError("must be at least a /24 so clusters and tunnels get addresses")
        return network


_QUANTITY = r"^\d+(\.\d+)?(m|Ki|Mi|Gi|k|M|G)?$"


class ContainerResources(StrictModel):
    """Requests and limits of one workload container; equal requests and limits give the
    Guaranteed QoS class, so the node never squeezes a workload during a run."""

    cpu_request: str = Field("2", pattern=_QUANTITY)
    cpu_limit: str = Field("2", pattern=_QUANTITY)
    memory_request: str = Field("512Mi", pattern=_QUANTITY)
    memory_limit: str = Field("512Mi", pattern=_QUANTITY)


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
    timeouts: KubernetesTimeouts = KubernetesTimeouts()
    proxy_resources: ContainerResources = Field(
        ContainerResources(
            cpu_request="1", cpu_limit="1", memory_request="512Mi", memory_limit="512Mi"
        ),
        description="Every per-request proxy a mesh puts on the path (Istio and Kuma sidecars, "
        "east-west gateway, zone ingress, NSM forwarder and vl3 endpoint) gets these, whatever "
        "the mesh: the study removed CPU limits for some proxies only.",
    )


class ExistingEnvironment(EnvironmentBase):
    """Two clusters someone already runs, reached through Airflow kubernetes connections."""

    client_conn_id: str = "meshbench_client_cluster"
    server_conn_id: str = "meshbench_server_cluster"
    paused_on_creation: bool = True
    load_balancer_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations for every LoadBalancer Service of a run, meshbench's and the "
        "meshes' (e.g. the internet-facing scheme on EKS clusters running the AWS Load "
        "Balancer Controller). None by default: Services stay as rendered.",
    )
    egress_cidrs: dict[Literal["client", "server"], list[str]] = Field(
        default_factory=dict,
        description="The addresses each cluster's traffic leaves from. Set for both clusters, "
        "every LoadBalancer Service of a run admits only the cluster(s) that use it "
        "(loadBalancerSourceRanges); unset, the environment sets no limit.",
    )

    @field_validator("egress_cidrs")
    @classmethod
    def _egress_networks(cls, cidrs: dict[str, list[str]]) -> dict[str, list[str]]:
        if cidrs and set(cidrs) != {"client", "server"}:
            raise ValueError("must list both clusters (client and server) or neither")
        for role, networks in cidrs.items():
            if not networks:
                raise ValueError(f"{role}: list at least one network")
            for cidr in networks:
                try:
                    network = ipaddress.ip_network(cidr)
                except ValueError as exc:
                    raise ValueError(f"{role}: {cidr!r} is not a network: {exc}") from None
                if network.prefixlen == 0:
                    raise ValueError(
                        f"{role}: {cidr} admits everyone; leave egress_cidrs out to set no limit"
                    )
        return cidrs


_AWS_KUBERNETES_MINOR = r"1\.\d{2}"
_CAPI_KUBERNETES_VERSION = r"v1\.\d{2}\.\d+"
_RELEASE_TAG = r"^v\d+\.\d+\.\d+$"


class RunTimings(StrictModel):
    """Assumed durations of the steps around the measured runs; only used for estimates."""

    create_minutes: float = Field(15.0, ge=0, description="Both clusters, created in parallel.")
    delete_minutes: float = Field(12.0, ge=0, description="Both clusters, deleted in parallel.")
    prepare_minutes: float = Field(5.0, ge=0, description="prepare_pair (CA, metrics-server).")
    mesh_install_minutes: dict[str, float] = Field(
        default_factory=lambda: {"baseline": 1.0, "istio": 6.0, "kuma": 6.0, "nsm": 10.0},
        description="install_mesh + wait_mesh_ready per iteration, by mesh.",
    )
    workload_minutes: float = Field(2.0, ge=0, description="deploy + wait for the workloads.")
    uninstall_minutes: float = Field(4.0, ge=0, description="Includes waiting for LBs to go.")
    run_overhead_seconds: float = Field(20.0, ge=0, description="Per load-generator run.")

    @field_validator("mesh_install_minutes")
    @classmethod
    def _known_mesh_timings(cls, minutes: dict[str, float]) -> dict[str, float]:
        for mesh, value in minutes.items():
            if mesh not in MESH_NAMES:
                raise ValueError(f"unknown mesh {mesh!r}; known meshes: {', '.join(MESH_NAMES)}")
            if value < 0:
                raise ValueError(f"{mesh}: minutes must not be negative")
        return minutes


class AwsPrices(StrictModel):
    """On-demand USD list prices per hour (us-east-1, checked 2026); estimates only."""

    cluster_hour: float = Field(0.10, ge=0, description="EKS control plane, standard support.")
    node_hour: float = Field(0.384, ge=0, description="One node of instance_type (m5.2xlarge).")
    load_balancer_hour: float = Field(0.025, ge=0, description="One Classic ELB (in-tree).")


class AwsEnvironment(EnvironmentBase):
    """Two EKS clusters created per run through providers-amazon and boto3."""

    aws_conn_id: str = "aws_default"
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    instance_type: str = Field("m5.2xlarge", pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
    node_count: int = Field(1, ge=1, le=10)
    kubernetes_version: str | None = Field(
        "1.35", description="EKS minor version ('1.35'); the study's 1.27 can no longer be created."
    )
    ami_type: str = Field("AL2023_x86_64_STANDARD", pattern=r"^[A-Za-z0-9_]+$")
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    disk_size: int = Field(50, ge=20, le=16384, description="Node root volume in GiB.")
    network_stack_name: str = Field("meshbench-network", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
    vpc_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.80.0.0/16")
    availability_zones: list[str] = Field(
        default_factory=list, description="Two zones; empty picks the region's first two."
    )
    private_subnets: bool = Field(
        False, description="Also create private subnets with one NAT gateway (costs money)."
    )
    node_placement: Literal["public", "private-unless-needed"] = Field(
        "public",
        description="'private-unless-needed' puts nodes in private subnets unless the mesh "
        "needs node-to-node reachability (nsm); needs private_subnets.",
    )
    authentication_mode: Literal["API", "API_AND_CONFIG_MAP"] = "API"
    admin_principal_arns: list[str] = Field(
        default_factory=list, description="Extra IAM principals given cluster-admin entries."
    )
    endpoint_public_access_cidrs: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0"],
        description="Who may reach the API endpoints (IAM-authenticated; istiod needs it).",
    )
    support_type: Literal["STANDARD", "EXTENDED"] = "STANDARD"
    waiter_delay: int = Field(30, ge=1, le=600, description="Seconds between AWS state polls.")
    waiter_max_attempts: int = Field(60, ge=1, le=1000)
    load_balancer_wait: Duration = Field(
        900.0, description="How long deletion waits for the mesh's load balancers to go."
    )
    reaper_ttl: Duration = Field(8 * 3600.0, description="Older meshbench resources are leaks.")
    prices: AwsPrices = AwsPrices()
    load_balancers_per_mesh: dict[str, int] = Field(
        default_factory=lambda: {"baseline": 1, "istio": 4, "kuma": 3, "nsm": 8},
        description="LoadBalancer Services per cluster pair (mesh-recipes.md section 7).",
    )
    timings: RunTimings = RunTimings()

    @field_validator("load_balancers_per_mesh")
    @classmethod
    def _known_mesh_counts(cls, counts: dict[str, int]) -> dict[str, int]:
        for mesh, count in counts.items():
            if mesh not in MESH_NAMES:
                raise ValueError(f"unknown mesh {mesh!r}; known meshes: {', '.join(MESH_NAMES)}")
            if count < 0:
                raise ValueError(f"{mesh}: a count must not be negative")
        return counts

    @field_validator("kubernetes_version")
    @classmethod
    def _eks_minor(cls, version: str | None) -> str | None:
        if version is None or not re.fullmatch(_AWS_KUBERNETES_MINOR, version):
            raise ValueError("must be an EKS minor version such as '1.35'")
        return version

    @field_validator("availability_zones")
    @classmethod
    def _two_zones(cls, zones: list[str]) -> list[str]:
        if zones and (len(zones) != 2 or len(set(zones)) != 2):
            raise ValueError("must list exactly two different availability zones, or none")
        return zones

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_size(cls, network: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not 16 <= network.prefixlen <= 22:
            raise ValueError("must be between a /16 and a /22 (it is split into four subnets)")
        return network

    @field_validator("endpoint_public_access_cidrs")
    @classmethod
    def _cidrs(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            try:
                ipaddress.IPv4Network(cidr)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not an IPv4 network: {exc}") from None
        return cidrs

    @field_validator("admin_principal_arns")
    @classmethod
    def _arns(cls, arns: list[str]) -> list[str]:
        for arn in arns:
            if not re.fullmatch(r"arn:aws[a-z-]*:(iam|sts)::\d{12}:[A-Za-z0-9+=,.@_/-]+", arn):
                raise ValueError(f"{arn!r} is not an IAM principal ARN")
        return arns

    @model_validator(mode="after")
    def _placement_needs_subnets(self) -> AwsEnvironment:
        if self.node_placement == "private-unless-needed" and not self.private_subnets:
            raise ValueError("node_placement 'private-unless-needed' needs private_subnets: true")
        return self


class CapiPrices(StrictModel):
    """USD per machine hour (Equinix Metal c3.medium.x86 on demand, 2023); estimates only."""

    machine_hour: float = Field(1.50, ge=0)


class CapiEnvironment(EnvironmentBase):
    """Two bare-metal clusters created through Cluster API against a management cluster."""

    management_conn_id: str = Field(
        "meshbench_capi_management", description="Kubernetes connection: the management cluster."
    )
    credentials_conn_id: str = Field(
        "meshbench_capi_credentials",
        description="Provider API token (password) and extra project_id / ssh_public_key.",
    )
    namespace: str = Field("meshbench", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    infrastructure_provider: str = Field("packet", pattern=r"^[a-z0-9-]+$")
    infrastructure_version: str = Field("v0.7.2", pattern=_RELEASE_TAG)
    core_version: str = Field("v1.5.2", pattern=_RELEASE_TAG, description="cluster-api core.")
    credentials_env_var: str = Field(
        "PACKET_API_KEY", pattern=r"^[A-Z][A-Z0-9_]*$", description="Read by `clusterctl init`."
    )
    machine_type: str = "c3.medium.x86"
    control_plane_machine_type: str | None = Field(None, description="Defaults to machine_type.")
    metro: str = Field("da", pattern=r"^[a-z0-9]{2,}$")
    node_os: str = "ubuntu_20_04"
    kubernetes_version: str | None = Field("v1.28.3", description="Full version, e.g. 'v1.28.3'.")
    pod_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.0.0/16")
    service_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("172.26.0.0/16")
    cpem_version: str = Field("v3.6.1", pattern=_RELEASE_TAG)
    cluster_template: str = Field(
        "builtin",
        description="'builtin' renders the provider's default kinds here (kubeadm from "
        "pkgs.k8s.io); 'provider' uses the provider release's own template; a URL or path "
        "is passed to `clusterctl generate cluster --from`.",
    )
    cluster_template_flavor: str = Field("", pattern=r"^[a-z0-9-]*$")
    template_variables: dict[str, str] = Field(
        default_factory=dict, description="Extra variables for `clusterctl generate cluster`."
    )
    cni_manifest_url: str = Field(
        "https://raw.githubusercontent.com/projectcalico/calico/v3.26.3/manifests/calico.yaml",
        pattern=r"^https://",
    )
    metallb_version: str = Field("v0.15.2", pattern=_RELEASE_TAG)
    metallb_mode: Literal["cpem-bgp", "l2"] = Field(
        "cpem-bgp",
        description="cpem-bgp: the Equinix CCM manages MetalLB's CRDs (per-Service EIPs); "
        "l2: meshbench applies IPAddressPool + L2Advertisement from metallb_addresses.",
    )
    metallb_addresses: dict[Literal["client", "server"], list[str]] = Field(default_factory=dict)
    cluster_ready_timeout: Duration = 1800.0
    delete_timeout: Duration = 1200.0
    poll_interval: Duration = 15.0
    command_timeout: Duration = 300.0
    reaper_ttl: Duration = 8 * 3600.0
    prices: CapiPrices = CapiPrices()
    timings: RunTimings = RunTimings(create_minutes=25.0, delete_minutes=8.0)

    @field_validator("kubernetes_version")
    @classmethod
    def _full_version(cls, version: str | None) -> str | None:
        if version is None or not re.fullmatch(_CAPI_KUBERNETES_VERSION, version):
            raise ValueError("must be a full Kubernetes release such as 'v1.28.3'")
        return version

    @field_validator("metallb_version")
    @classmethod
    def _crd_metallb(cls, version: str) -> str:
        major, minor, _patch = (int(part) for part in version[1:].split("."))
        if (major, minor) < (0, 13):
            raise ValueError("must be v0.13.0 or newer (configured through CRDs)")
        return version

    @model_validator(mode="after")
    def _consistent(self) -> CapiEnvironment:
        if self.cluster_template == "builtin" and self.infrastructure_provider != "packet":
            raise ValueError(
                f"cluster_template 'builtin' renders packet kinds only; set cluster_template to "
                f"a template URL for provider {self.infrastructure_provider!r}"
            )
        if self.metallb_mode == "l2" and not all(
            self.metallb_addresses.get(role) for role in ("client", "server")
        ):
            raise ValueError("metallb_mode 'l2' needs metallb_addresses for client and server")
        if self.metallb_mode == "cpem-bgp" and self.infrastructure_provider != "packet":
            raise ValueError("metallb_mode 'cpem-bgp' needs the packet provider's CCM; use 'l2'")
        return self


class ReaperSettings(StrictModel):
    """The daily reaper DAG that removes leaked clusters (TTLs are per environment)."""

    schedule: str = "@daily"
    pool: Pool = Pool(name="meshbench_reaper", slots=1)


class Environments(StrictModel):
    local: LocalEnvironment = LocalEnvironment(
        meshes=["baseline", "envoy-mtls", "wireguard"], pool=Pool(name="meshbench_local")
    )
    existing: ExistingEnvironment = ExistingEnvironment(
        enabled=False, pool=Pool(name="meshbench_existing")
    )
    aws: AwsEnvironment = AwsEnvironment(enabled=False, pool=Pool(name="meshbench_aws", slots=2))
    capi: CapiEnvironment = CapiEnvironment(
        enabled=False, pool=Pool(name="meshbench_capi", slots=2)
    )


class MeshBase(StrictModel):
    scope: Literal["local", "kubernetes", "any"]
    description: str = ""


_KUBERNETES_MINOR = r"^1\.\d{1,2}$"
_RELEASE_LINE = r"^v?\d+\.\d+$"
_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class KubernetesRange(StrictModel):
    """The Kubernetes minor versions one mesh release line supports, and where that is
    written (a plan for a version outside the range warns at the top)."""

    min: str = Field(pattern=_KUBERNETES_MINOR)
    max: str = Field(pattern=_KUBERNETES_MINOR)
    source: str = Field(min_length=1)


class RoleNames(StrictModel):
    """One name per cluster role."""

    client: str = Field(pattern=_NAME)
    server: str = Field(pattern=_NAME)


class KubernetesMesh(MeshBase):
    scope: Literal["kubernetes"] = "kubernetes"
    supported_kubernetes: dict[str, KubernetesRange] = Field(
        default_factory=dict, description="Release line ('1.19') -> supported Kubernetes range."
    )

    @field_validator("supported_kubernetes")
    @classmethod
    def _release_lines(cls, ranges: dict[str, KubernetesRange]) -> dict[str, KubernetesRange]:
        for line in ranges:
            if not re.fullmatch(_RELEASE_LINE, line):
                raise ValueError(f"release line {line!r} must look like '1.19'")
        return ranges


def _istio_support() -> dict[str, KubernetesRange]:
    return {
        "1.19": KubernetesRange(
            min="1.25", max="1.28", source="istio.io data/compatibility/supportStatus.yml"
        ),
        "1.28": KubernetesRange(
            min="1.30",
            max="1.34",
            source="istio.io data/compatibility/supportStatus.yml (the 1.28.0 announcement "
            "says 1.29-1.34)",
        ),
        "1.31": KubernetesRange(
            min="1.32", max="1.36", source="istio.io announcing-1.31 (2026-08-20)"
        ),
    }


def _kuma_support() -> dict[str, KubernetesRange]:
    return {
        "2.4": KubernetesRange(
            min="1.23", max="1.27", source="kuma 2.4.3 mk/dev.mk K8S_MIN/MAX_VERSION (CI range)"
        ),
        "2.14": KubernetesRange(
            min="1.32", max="1.35", source="kuma v2.14.3 mk/dev.mk K8S_MIN/MAX_VERSION (CI range)"
        ),
    }


def _nsm_support() -> dict[str, KubernetesRange]:
    return {
        "1.11": KubernetesRange(
            min="1.20",
            max="1.27",
            source="networkservicemesh/integration-k8s-kind v1.11.1 CI kind matrix",
        ),
        "1.18": KubernetesRange(
            min="1.29",
            max="1.32",
            source="no matrix published for v1.18; the newest one, integration-k8s-kind "
            "v1.15.0 CI, tests kind 1.29-1.32",
        ),
    }


class IstioMesh(KubernetesMesh):
    """Istio multi-primary on different networks (mesh-recipes.md section 1)."""

    description: str = "Istio multi-primary."
    supported_kubernetes: dict[str, KubernetesRange] = Field(default_factory=_istio_support)
    mesh_id: str = Field("mesh1", pattern=_NAME)
    cluster_names: RoleNames = RoleNames(client="cluster1", server="cluster2")
    networks: RoleNames = RoleNames(client="network1", server="network2")
    control_plane_profile: Literal["minimal", "default"] = Field(
        "minimal",
        description="istioctl profile of each control plane; 'default' also installs a "
        "north-south ingress gateway (one more load balancer, not on the measured path).",
    )
    remote_api_servers: dict[Literal["client", "server"], str] = Field(
        default_factory=dict,
        description="API server URL of a cluster as the other cluster's istiod reaches it "
        "(istioctl create-remote-secret --server); empty: the URL in its kubeconfig.",
    )


class KumaGlobalControlPlane(StrictModel):
    """Where Kuma's global control plane runs and what it stores its state in. The study
    co-located an in-memory global with a zone; the docs want a dedicated cluster or
    Postgres (mesh-recipes.md section 2.2, 2.10)."""

    cluster: Literal["client", "server"] = "server"
    namespace: str = Field("kuma-global", pattern=_NAME)
    store: Literal["memory", "postgres"] = "memory"
    postgres_conn_id: str | None = Field(
        None,
        description="Airflow connection (host, port, login, password, schema) for store "
        "'postgres'.",
    )

    @model_validator(mode="after")
    def _postgres_needs_connection(self) -> KumaGlobalControlPlane:
        if self.store == "postgres" and not self.postgres_conn_id:
            raise ValueError("store 'postgres' needs postgres_conn_id")
        return self


class KumaMesh(KubernetesMesh):
    """Kuma multi-zone without egress (mesh-recipes.md section 2)."""

    description: str = "Kuma multi-zone."
    supported_kubernetes: dict[str, KubernetesRange] = Field(default_factory=_kuma_support)
    zone_names: RoleNames = RoleNames(client="zone1", server="zone2")
    global_control_plane: KumaGlobalControlPlane = KumaGlobalControlPlane()
    chart_repository: str = Field("https://kumahq.github.io/charts", pattern=r"^https://")


class NsmMesh(KubernetesMesh):
    """Network Service Mesh interdomain vl3 (mesh-recipes.md section 3)."""

    description: str = "Network Service Mesh vl3."
    supported_kubernetes: dict[str, KubernetesRange] = Field(default_factory=_nsm_support)
    inter_node_mechanism: Literal["wireguard", "ipsec"] = Field(
        "wireguard",
        description="vl3 carries IP payload, so NSM picks WireGuard; 'ipsec' sets "
        "NSM_MECHANISM_PRIORITY=ipsec on the forwarders.",
    )
    deployments_repository: str = Field(
        "https://github.com/networkservicemesh/deployments-k8s", pattern=r"^https://"
    )
    network_service: str = Field("my-vl3-network", pattern=_NAME)
    vl3_prefix: ipaddress.IPv4Network = ipaddress.IPv4Network("172.16.0.0/16")
    spire_storage_class: str | None = Field(
        None,
        pattern=_NAME,
        description="StorageClass of the SPIRE server's 1Gi ReadWriteOnce claim spire-data "
        "(deployments-k8s from v1.12); empty: the cluster's default StorageClass. Either is "
        "checked before SPIRE is applied.",
    )
    spire_postgres_tag: str = Field(
        "17.6",
        pattern=r"^[\w.-]+$",
        description="Tag of the postgres image of upstream's examples/spire/postgres (from "
        "v1.14), which names no tag.",
    )
    vpp_cpu_limit: str | None = Field(
        None,
        pattern=_QUANTITY,
        description="CPU limit of the VPP containers (forwarder-vpp, nse-vl3-vpp); empty: "
        "none. VPP puts NSM's interfaces in adaptive rx mode and polls them while traffic "
        "flows, so under load it uses its one main thread's core whatever the limit.",
    )


class Meshes(StrictModel):
    baseline: MeshBase = MeshBase(scope="any", description="No mesh: the floor.")
    envoy_mtls: MeshBase = Field(
        MeshBase(scope="local", description="Envoy sidecars with mTLS through a gateway."),
        alias="envoy-mtls",
    )
    wireguard: MeshBase = MeshBase(scope="local", description="A WireGuard L3 tunnel.")
    istio: IstioMesh = IstioMesh()
    kuma: KumaMesh = KumaMesh()
    nsm: NsmMesh = NsmMesh()

    def get(self, name: str) -> MeshBase:
        return getattr(self, name.replace("-", "_"))


class VersionProfile(StrictModel):
    """Mesh versions measured together; a profile name is recorded with every run."""

    istio: str | None = None
    kuma: str | None = None
    nsm: str | None = None

    @field_validator("istio", "kuma", "nsm")
    @classmethod
    def _semver(cls, version: str | None) -> str | None:
        if version is not None and not re.fullmatch(r"v?\d+\.\d+\.\d+", version):
            raise ValueError("must be a release version such as '1.19.3'")
        return version


class Defaults(StrictModel):
    schedule: str = "@daily"
    load_profile: str = "study"
    version_profile: str = "study-2023"
    owner: str = "meshbench"
    retries: int = Field(1, ge=0, le=10)
    retry_delay: Duration = Field(60.0, description="Wait before a failed task is retried.")


class ArtifactSettings(StrictModel):
    """Where raw results, reports and charts are written before anything else reads them.

    A local folder by default; ``s3://bucket/prefix`` (through the Airflow connection
    ``conn_id``) when tasks run on several workers.
    """

    base_uri: str | None = Field(None, description="Defaults to file://<state folder>/artifacts.")
    conn_id: str | None = Field(None, description="Airflow connection for s3:// URIs.")

    @field_validator("base_uri")
    @classmethod
    def _scheme(cls, uri: str | None) -> str | None:
        if uri is not None and not re.match(r"^(file|s3|gs|gcs|abfs|az)://", uri):
            raise ValueError("must be a URI such as file:///var/meshbench or s3://bucket/prefix")
        return uri


class RegressionNotifications(StrictModel):
    """Where new regressions are announced besides the task log (always written).

    A channel is used only when its provider is installed and its Airflow connection exists;
    otherwise the log says which one is missing.
    """

    slack_webhook_conn_id: str | None = Field(
        "meshbench_slack", description="Connection for apache-airflow-providers-slack."
    )
    smtp_conn_id: str | None = Field(
        "meshbench_smtp", description="Connection for apache-airflow-providers-smtp."
    )
    email_to: list[str] = Field(default_factory=list, description="Recipients of the email.")


SeriesMetric = Literal["qps", "avg_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms"]


class OtavaSettings(StrictModel):
    """Apache Otava's E-divisive means with a t-test, run on a series' daily medians.

    The defaults are the measured ones (benchmarks/results/regression_methods.txt): 5 %
    false alarms per 40-day history at 5 %/3 % noise, a 10 % step found in every history
    at up to 3 % noise.
    """

    window: int = Field(30, ge=3, le=365, description="Days per sliding window (window_len).")
    max_pvalue: float = Field(
        0.0001, gt=0, lt=1, description="Largest t-test p-value of a change point."
    )
    min_magnitude: float = Field(
        0.05, ge=0, lt=10, description="Smallest relative change of the mean that counts."
    )


class RegressionSettings(StrictModel):
    """Regression detection over history (meshbench.analysis.regression).

    ``method: otava`` (the default) finds change points in each series' daily medians with
    Apache Otava (settings under ``otava``). ``method: mann-whitney-u`` compares each day's
    positive measured runs of one environment × mesh × mesh version × load profile with
    the runs of a trailing window of earlier days by a two-sided Mann-Whitney U test; a
    day is flagged when the p-value is below ``alpha``, the medians differ by at least
    ``min_change`` and the day's median lies more than ``day_noise_factor`` robust
    standard deviations of the window's daily medians away. ``environments`` holds
    per-environment overrides, merged over these settings (``for_environment``).
    """

    method: Literal["otava", "mann-whitney-u"] = "otava"
    otava: OtavaSettings = OtavaSettings()
    enabled: bool = True
    metrics: list[SeriesMetric] = Field(
        default_factory=lambda: ["qps", "avg_ms", "p90_ms", "p99_ms", "p999_ms"]
    )
    window_days: int = Field(14, ge=2, le=365, description="Calendar days before the tested day.")
    min_window_days: int = Field(7, ge=2, description="Fewer days with runs: not tested.")
    min_runs_per_day: int = Field(3, ge=2, description="Fewer positive runs: day not tested.")
    alpha: float = Field(0.01, gt=0, lt=0.5, description="Significance level of the test.")
    min_change: float = Field(
        0.05, ge=0, lt=10, description="Smallest relative change of the median that counts."
    )
    day_noise_factor: float = Field(
        4.0, ge=0, description="Change in robust SDs of the window's daily medians; 0: off."
    )
    history_days: int = Field(
        180, ge=2, le=3650, description="History replayed to find earlier change points."
    )
    notifications: RegressionNotifications = RegressionNotifications()
    environments: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-environment overrides of these settings, merged over them.",
    )

    def for_environment(self, environment: str | None) -> RegressionSettings:
        """These settings with ``environments[environment]`` merged over them."""
        override = self.environments.get(environment or "")
        if not override:
            return self
        merged = _merged(self.model_dump(exclude={"environments"}), override)
        try:
            return RegressionSettings.model_validate(merged)
        except ValueError as error:
            raise ValueError(f"regression.environments.{environment}: {error}") from error

    @model_validator(mode="after")
    def _overrides_valid(self) -> RegressionSettings:
        for environment, override in self.environments.items():
            if "environments" in override:
                raise ValueError(f"regression.environments.{environment} cannot nest environments")
            self.for_environment(environment)
        return self

    @model_validator(mode="after")
    def _window_fits(self) -> RegressionSettings:
        if self.min_window_days > self.window_days:
            raise ValueError(
                f"min_window_days ({self.min_window_days}) exceeds window_days ({self.window_days})"
            )
        if self.history_days < self.window_days:
            raise ValueError(
                f"history_days ({self.history_days}) is shorter than window_days "
                f"({self.window_days})"
            )
        return self


class AggregationSettings(StrictModel):
    """How the daily summary treats runs the deviation check flags (meshbench.analysis.aggregate).

    Every positive run counts in the means by default, as the study defined them; flagged
    runs are listed with their reason. Leaving them out is this explicit setting, recorded
    in each summary row and shown in every table it affects.
    """

    exclude_flagged_runs: bool = False


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, nested mappings merged key by key."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result


class BenchmarkConfig(StrictModel):
    defaults: Defaults = Defaults()
    artifacts: ArtifactSettings = ArtifactSettings()
    load_profiles: dict[str, LoadProfile]
    version_profiles: dict[str, VersionProfile]
    meshes: Meshes = Meshes()
    environments: Environments = Environments()
    kubernetes: KubernetesSettings = KubernetesSettings()
    reaper: ReaperSettings = ReaperSettings()
    regression: RegressionSettings = RegressionSettings()
    aggregation: AggregationSettings = AggregationSettings()

    @field_validator("load_profiles", "version_profiles")
    @classmethod
    def _named(cls, profiles: dict[str, Any]) -> dict[str, Any]:
        if not profiles:
            raise ValueError("must define at least one profile")
        for name in profiles:
            if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
                raise ValueError(f"profile name {name!r} must be lower-case letters, digits, -._")
        return profiles

    @model_validator(mode="after")
    def _references_resolve(self) -> BenchmarkConfig:
        problems: list[str] = []
        if self.defaults.load_profile not in self.load_profiles:
            problems.append(
                f"defaults.load_profile: no load profile named {self.defaults.load_profile!r}"
            )
        if self.defaults.version_profile not in self.version_profiles:
            problems.append(
                f"defaults.version_profile: no version profile named "
                f"{self.defaults.version_profile!r}"
            )
        for env_name in ENVIRONMENT_NAMES:
            env: EnvironmentBase = getattr(self.environments, env_name)
            where = f"environments.{env_name}"
            if env.load_profile is not None and env.load_profile not in self.load_profiles:
                problems.append(f"{where}.load_profile: no load profile named {env.load_profile!r}")
            if env.version_profile is not None and env.version_profile not in self.version_profiles:
                problems.append(
                    f"{where}.version_profile: no version profile named {env.version_profile!r}"
                )
            profile = self.version_profiles.get(
                env.version_profile or self.defaults.version_profile
            )
            for index, mesh in enumerate(env.meshes):
                scope = self.meshes.get(mesh).scope
                if env_name == "local" and scope == "kubernetes":
                    problems.append(
                        f"{where}.meshes.{index}: {mesh!r} needs Kubernetes clusters; the local "
                        f"environment runs baseline, envoy-mtls and wireguard"
                    )
                if env_name != "local" and scope == "local":
                    problems.append(
                        f"{where}.meshes.{index}: {mesh!r} is a local data-plane emulation and "
                        f"only runs in the local environment"
                    )
                if mesh in VERSIONED_MESHES and profile is not None and not getattr(profile, mesh):
                    problems.append(
                        f"{where}.meshes.{index}: {mesh!r} has no version in version profile "
                        f"{env.version_profile or self.defaults.version_profile!r}"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def environment(self, name: str) -> EnvironmentBase:
        if name not in ENVIRONMENT_NAMES:
            raise ConfigError(
                f"unknown environment {name!r}; known: {', '.join(ENVIRONMENT_NAMES)}"
            )
        return getattr(self.environments, name)

    def load_profile_for(self, environment: str) -> LoadProfile:
        return self.load_profiles[self.load_profile_name_for(environment)]

    def load_profile_name_for(self, environment: str) -> str:
        override = os.environ.get(LOAD_PROFILE_ENV_VAR)
        if override:
            if override not in self.load_profiles:
                raise ConfigError(
                    f"${LOAD_PROFILE_ENV_VAR}: no load profile named {override!r}; defined: "
                    f"{', '.join(self.load_profiles)}"
                )
            return override
        return self.environment(environment).load_profile or self.defaults.load_profile

    def version_profile_name_for(self, environment: str) -> str:
        return self.environment(environment).version_profile or self.defaults.version_profile

    def mesh_version(self, environment: str, mesh: str) -> str | None:
        """The version measured for ``mesh`` in ``environment``; None for unversioned meshes."""
        if mesh not in VERSIONED_MESHES:
            return None
        profile = self.version_profiles[self.version_profile_name_for(environment)]
        return getattr(profile, mesh)

    def paired_baseline(self, environment: str, mesh: str) -> bool:
        """Whether each measured run of ``mesh`` follows a no-mesh run between the same
        clusters (never for the baseline itself, which is that path)."""
        return mesh != "baseline" and self.environment(environment).paired_baseline

    def schedule_for(self, environment: str) -> str:
        return self.environment(environment).schedule or self.defaults.schedule

    @cached_property
    def matrix(self) -> list[tuple[str, str]]:
        """Every enabled (environment, mesh) pair, in file order."""
        return list(self.iter_pairs(enabled_only=True))

    def iter_pairs(self, enabled_only: bool = True) -> Iterator[tuple[str, str]]:
        for env_name in ENVIRONMENT_NAMES:
            env = getattr(self.environments, env_name)
            if enabled_only and not env.enabled:
                continue
            for mesh in env.meshes:
                yield env_name, mesh


def _describe_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid benchmark configuration ({error.error_count()} problem(s))"]
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            lines.append(f"  {path}: required field is missing")
        elif path == "(top level)" or item["loc"] == ():
            lines.append(f"  {message}")
        else:
            lines.append(f"  {path}: {message} (got {_describe_value(item.get('input'))})")
    return "\n".join(lines)


def parse_config(text: str, source: str = "<string>") -> BenchmarkConfig:
    """Validate YAML text; raises ConfigError naming the source, field path and value."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of settings, got "
            f"{type(document).__name__} {_describe_value(document)}"
        )
    try:
        return BenchmarkConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def load_config(path: str | os.PathLike[str] | None = None) -> BenchmarkConfig:
    """Read the configuration from ``path``, ``$MESHBENCH_CONFIG`` or the packaged default."""
    resolved = Path(path) if path is not None else config_path()
    try:
        text = resolved.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{resolved}: cannot read the configuration: {exc.strerror}") from None
    return parse_config(text, str(resolved))
