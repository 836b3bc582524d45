"""The benchmark matrix, read from ``benchmarks.yaml`` into typed, validated models.

Every validation error names the file, the dotted field path and the offending value, so
a performance engineer can fix a typo without reading this package. The models live in
modules by concern; everything is importable from here, as it always was.
"""

from __future__ import annotations

from meshbench.config.benchmark import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    LOAD_PROFILE_ENV_VAR,
    BenchmarkConfig,
    Defaults,
    Environments,
    ReaperSettings,
    config_path,
    format_validation_error,
    load_config,
    parse_config,
)
from meshbench.config.clouds import (
    AwsEnvironment,
    AwsPrices,
    CapiEnvironment,
    CapiPrices,
    RunTimings,
)
from meshbench.config.common import (
    BENCHMARK_NETWORK,
    ENVIRONMENT_NAMES,
    MESH_NAMES,
    VERSIONED_MESHES,
    ConfigError,
    Duration,
    Pool,
    StrictModel,
    format_duration,
    parse_duration,
)
from meshbench.config.environments import EnvironmentBase, ExistingEnvironment, LocalEnvironment
from meshbench.config.kubernetes import (
    ContainerResources,
    KubernetesSettings,
    KubernetesTimeouts,
    KubernetesWorkload,
    MetricsServerSettings,
    ResourceCostSettings,
)
from meshbench.config.load_profiles import LoadProfile, LoadStep
from meshbench.config.meshes import (
    IstioMesh,
    KubernetesMesh,
    KumaGlobalControlPlane,
    KumaMesh,
    MeshBase,
    Meshes,
    NsmMesh,
    RoleNames,
)
from meshbench.config.results import (
    AggregationSettings,
    ArtifactSettings,
    OtavaSettings,
    RegressionNotifications,
    RegressionSettings,
    SeriesMetric,
)
from meshbench.config.versions import KubernetesRange, VersionProfile

__all__ = [
    "BENCHMARK_NETWORK",
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "ENVIRONMENT_NAMES",
    "LOAD_PROFILE_ENV_VAR",
    "MESH_NAMES",
    "VERSIONED_MESHES",
    "AggregationSettings",
    "ArtifactSettings",
    "AwsEnvironment",
    "AwsPrices",
    "BenchmarkConfig",
    "CapiEnvironment",
    "CapiPrices",
    "ConfigError",
    "ContainerResources",
    "Defaults",
    "Duration",
    "EnvironmentBase",
    "Environments",
    "ExistingEnvironment",
    "IstioMesh",
    "KubernetesMesh",
    "KubernetesRange",
    "KubernetesSettings",
    "KubernetesTimeouts",
    "KubernetesWorkload",
    "KumaGlobalControlPlane",
    "KumaMesh",
    "LoadProfile",
    "LoadStep",
    "LocalEnvironment",
    "MeshBase",
    "Meshes",
    "MetricsServerSettings",
    "NsmMesh",
    "OtavaSettings",
    "Pool",
    "ReaperSettings",
    "RegressionNotifications",
    "RegressionSettings",
    "ResourceCostSettings",
    "RoleNames",
    "RunTimings",
    "SeriesMetric",
    "StrictModel",
    "VersionProfile",
    "config_path",
    "format_duration",
    "format_validation_error",
    "load_config",
    "parse_config",
    "parse_duration",
]
