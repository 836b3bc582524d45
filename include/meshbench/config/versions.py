"""Mesh versions: the profiles measured together and the Kubernetes each release supports."""

from __future__ import annotations

from pydantic import Field, field_validator

from meshbench.config.common import StrictModel, check_pattern

_KUBERNETES_MINOR = r"^1\.\d{1,2}$"
RELEASE_LINE = r"^v?\d+\.\d+$"


class VersionProfile(StrictModel):
    """Mesh versions measured together; a profile name is recorded with every run."""

    istio: str | None = None
    kuma: str | None = None
    nsm: str | None = None

    @field_validator("istio", "kuma", "nsm")
    @classmethod
    def _semver(cls, version: str | None) -> str | None:
        return check_pattern(
            r"v?\d+\.\d+\.\d+", version, "must be a release version such as '1.19.3'"
        )


class KubernetesRange(StrictModel):
    """The Kubernetes minor versions one mesh release line supports, and where that is
    written (a plan for a version outside the range warns at the top)."""

    min: str = Field(pattern=_KUBERNETES_MINOR)
    max: str = Field(pattern=_KUBERNETES_MINOR)
    source: str = Field(min_length=1)


def istio_support() -> dict[str, KubernetesRange]:
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


def kuma_support() -> dict[str, KubernetesRange]:
    return {
        "2.4": KubernetesRange(
            min="1.23", max="1.27", source="kuma 2.4.3 mk/dev.mk K8S_MIN/MAX_VERSION (CI range)"
        ),
        "2.14": KubernetesRange(
            min="1.32", max="1.35", source="kuma v2.14.3 mk/dev.mk K8S_MIN/MAX_VERSION (CI range)"
        ),
    }


def nsm_support() -> dict[str, KubernetesRange]:
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
