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
        False, description="Measure the no-mesh path right before each mesh's measured runs."
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
    paused_on_creation: bool = False
    paired_baseline: bool = True

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
    version: str = Field("v0.7.2", pattern=r"^v\d+\.\d+\.\d+$")
    kubelet_insecure_tls: bool = Field(
        False, description="Needed where kubelet serving certificates are self-signed (kubeadm)."
    )
    sample_interval: Duration = Field(5.0, description="Polling period; metrics change every 15s.")
    cpu_limit_fraction: float = Field(
        0.9, gt=0, le=1, description="A container at this share of its CPU limit fails the run."
    )


class KubernetesTimeouts(StrictModel):
    rollout: Duration = 300.0
    load_balancer: Duration = 600.0
    namespace_deletion: Duration = 300.0
    metrics_api: Duration = 180.0
    command: Duration = 600.0


class KubernetesSettings(StrictModel):
    """What every Kubernetes environment (existing, aws, capi) deploys and how it waits."""

    nginx: KubernetesWorkload = KubernetesWorkload(image="nginx:1.23.3")
    fortio: KubernetesWorkload = KubernetesWorkload(image="fortio/fortio:1.40.0")
    nginx_keepalive_requests: int = Field(
        10_000_000, ge=1000, description="nginx's default 1000 reconnects during a run."
    )
    metrics_server: MetricsServerSettings = MetricsServerSettings()
    timeouts: KubernetesTimeouts = KubernetesTimeouts()


class ExistingEnvironment(EnvironmentBase):
    """Two clusters someone already runs, reached through Airflow kubernetes connections."""

    client_conn_id: str = "meshbench_client_cluster"
    server_conn_id: str = "meshbench_server_cluster"
    paused_on_creation: bool = True


class AwsEnvironment(EnvironmentBase):
    """Two EKS clusters created per run (settings filled in by the AWS path)."""

    aws_conn_id: str = "aws_default"
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    instance_type: str = "m5.2xlarge"
    node_count: int = Field(1, ge=1, le=10)


class CapiEnvironment(EnvironmentBase):
    """Two bare-metal clusters created through Cluster API against a management cluster."""

    management_conn_id: str = "meshbench_capi_management"
    infrastructure_provider: str = "packet"
    machine_type: str = "c3.medium.x86"


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


class Meshes(StrictModel):
    baseline: MeshBase = MeshBase(scope="any", description="No mesh: the floor.")
    envoy_mtls: MeshBase = Field(
        MeshBase(scope="local", description="Envoy sidecars with mTLS through a gateway."),
        alias="envoy-mtls",
    )
    wireguard: MeshBase = MeshBase(scope="local", description="A WireGuard L3 tunnel.")
    istio: MeshBase = MeshBase(scope="kubernetes", description="Istio multi-primary.")
    kuma: MeshBase = MeshBase(scope="kubernetes", description="Kuma multi-zone.")
    nsm: MeshBase = MeshBase(scope="kubernetes", description="Network Service Mesh vl3.")

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


class BenchmarkConfig(StrictModel):
    defaults: Defaults = Defaults()
    load_profiles: dict[str, LoadProfile]
    version_profiles: dict[str, VersionProfile]
    meshes: Meshes = Meshes()
    environments: Environments = Environments()
    kubernetes: KubernetesSettings = KubernetesSettings()

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
            profile = self.version_profiles.get(env.version_profile or self.defaults.version_profile)
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
        name = self.environment(environment).load_profile or self.defaults.load_profile
        return self.load_profiles[name]

    def load_profile_name_for(self, environment: str) -> str:
        return self.environment(environment).load_profile or self.defaults.load_profile

    def version_profile_name_for(self, environment: str) -> str:
        return self.environment(environment).version_profile or self.defaults.version_profile

    def mesh_version(self, environment: str, mesh: str) -> str | None:
        """The version measured for ``mesh`` in ``environment``; None for unversioned meshes."""
        if mesh not in VERSIONED_MESHES:
            return None
        profile = self.version_profiles[self.version_profile_name_for(environment)]
        return getattr(profile, mesh)

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
