"""The environments that create their clusters per run: ``aws`` (EKS) and ``capi``."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from meshbench.config.common import (
    RELEASE_TAG,
    Duration,
    StrictModel,
    check_mesh_amounts,
    check_pattern,
)
from meshbench.config.environments import EnvironmentBase

_AWS_KUBERNETES_MINOR = r"1\.\d{2}"
_CAPI_KUBERNETES_VERSION = r"v1\.\d{2}\.\d+"
_IAM_PRINCIPAL_ARN = r"arn:aws[a-z-]*:(iam|sts)::\d{12}:[A-Za-z0-9+=,.@_/-]+"


def _required_kubernetes_version(pattern: str, message: str) -> Any:
    """A validator of ``kubernetes_version`` for an environment that creates its clusters,
    so must be told which release to create."""

    def check(cls: type, version: str | None) -> str | None:
        return check_pattern(pattern, version, message, optional=False)

    return field_validator("kubernetes_version")(classmethod(check))


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
    run_overhead_seconds: float = Field(
        35.0,
        ge=0,
        description="Per load-generator run: its port-forward and polling, and for measured "
        "runs the cost windows (a 10 s idle window, fresh kubelet counters before and after).",
    )

    @field_validator("mesh_install_minutes")
    @classmethod
    def _known_mesh_timings(cls, minutes: dict[str, float]) -> dict[str, float]:
        check_mesh_amounts(minutes, "minutes")
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
        check_mesh_amounts(counts, "a count")
        return counts

    _eks_minor = _required_kubernetes_version(
        _AWS_KUBERNETES_MINOR, "must be an EKS minor version such as '1.35'"
    )

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
            check_pattern(_IAM_PRINCIPAL_ARN, arn, f"{arn!r} is not an IAM principal ARN")
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
    infrastructure_version: str = Field("v0.7.2", pattern=RELEASE_TAG)
    core_version: str = Field("v1.5.2", pattern=RELEASE_TAG, description="cluster-api core.")
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
    cpem_version: str = Field("v3.6.1", pattern=RELEASE_TAG)
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
    metallb_version: str = Field("v0.15.2", pattern=RELEASE_TAG)
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

    _full_version = _required_kubernetes_version(
        _CAPI_KUBERNETES_VERSION, "must be a full Kubernetes release such as 'v1.28.3'"
    )

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
