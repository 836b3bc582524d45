"""The whole ``benchmarks.yaml``: the top-level model, its cross-references, and loading."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from meshbench.config.clouds import AwsEnvironment, CapiEnvironment
from meshbench.config.common import (
    ENVIRONMENT_NAMES,
    VERSIONED_MESHES,
    ConfigError,
    Duration,
    Pool,
    StrictModel,
)
from meshbench.config.environments import EnvironmentBase, ExistingEnvironment, LocalEnvironment
from meshbench.config.kubernetes import KubernetesSettings
from meshbench.config.load_profiles import LoadProfile
from meshbench.config.meshes import Meshes
from meshbench.config.results import AggregationSettings, ArtifactSettings, RegressionSettings
from meshbench.config.versions import VersionProfile

# The packaged default sits next to the package, not inside it.
DEFAULT_CONFIG_PATH = Path(__file__).parent.with_name("benchmarks.yaml")
CONFIG_ENV_VAR = "MESHBENCH_CONFIG"
# Runs every environment with one named load profile (``make run`` uses ``demo``).
LOAD_PROFILE_ENV_VAR = "MESHBENCH_LOAD_PROFILE"


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


class Defaults(StrictModel):
    schedule: str = "@daily"
    load_profile: str = "study"
    version_profile: str = "study-2023"
    owner: str = "meshbench"
    retries: int = Field(1, ge=0, le=10)
    retry_delay: Duration = Field(60.0, description="Wait before a failed task is retried.")


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
