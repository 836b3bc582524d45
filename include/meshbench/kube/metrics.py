"""metrics-server: making sure it answers, sampling containers during a run, judging limits.

The study polled ``kubectl top pod -A`` every 5 s and looked at the numbers by eye. Here a
background thread reads ``PodMetrics`` (metrics.k8s.io/v1beta1) per container for every
scope on the path, keeps one sample per metrics timestamp (metrics-server refreshes every
15 s, so most polls repeat the last value), attaches each container's limits from its live
pod spec (sidecars are injected, so the manifest alone would not know them), and
:func:`cpu_limit_failure` turns "a container reached 90 % of its CPU limit" into the run's
negative reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from meshbench.backend import StepFailed
from meshbench.config import MetricsServerSettings
from meshbench.kube.api import KubeApi
from meshbench.kube.cluster import KubeCluster

log = logging.getLogger(__name__)

METRICS_API_VERSION = "metrics.k8s.io/v1beta1"
METRICS_APISERVICE = "v1beta1.metrics.k8s.io"
METRICS_SERVER_NAMESPACE = "kube-system"
METRICS_SERVER_DEPLOYMENT = "metrics-server"
INSECURE_TLS_FLAG = "--kubelet-insecure-tls"


def components_url(version: str) -> str:
    """The release manifest of a pinned metrics-server version (never ``latest``)."""
    return (
        "https://github.com/kubernetes-sigs/metrics-server/releases/download/"
        f"{version}/components.yaml"
    )


def parse_quantity(value: str | int | float) -> Decimal:
    from kubernetes.utils.quantity import parse_quantity as parse

    return Decimal(parse(value))


def millicores(value: str | int | float) -> float:
    return float(parse_quantity(value) * 1000)


def byte_count(value: str | int | float) -> int:
    return int(parse_quantity(value))


def install_commands(settings: MetricsServerSettings) -> list[list[str]]:
    """The kubectl argument lists that install metrics-server (for the plan and the run).
    Without a ``version`` (the environment names no Kubernetes version) the plan shows
    the choice the run makes from the cluster's version."""
    chosen = (
        settings.version
        or "<"
        + ", ".join(f"{release} from {minor}" for minor, release in settings.releases.items())
        + " by the cluster's Kubernetes version>"
    )
    commands = [["apply", "--server-side", "-f", components_url(chosen)]]
    if settings.kubelet_insecure_tls:
        patch = (
            '[{"op":"add","path":"/spec/template/spec/containers/0/args/-",'
            f'"value":"{INSECURE_TLS_FLAG}"}}]'
        )
        commands.append(
            [
                "patch",
                "deployment",
                METRICS_SERVER_DEPLOYMENT,
                "--namespace",
                METRICS_SERVER_NAMESPACE,
                "--type=json",
                "-p",
                patch,
            ]
        )
    return commands


def ensure_metrics_server(
    cluster: KubeCluster, settings: MetricsServerSettings, timeout: float, command_timeout: float
) -> str:
    """Make the metrics API answer in ``cluster``; returns "present" or "installed <version>".

    Installs the pinned release only when the APIService is missing and the settings allow
    it; an APIService that exists but is not Available is waited for, never reinstalled.
    """
    if not settings.version:
        settings = settings.model_copy(
            update={"version": settings.release_for(cluster.api.server_version())}
        )
    present = cluster.api.get("apiregistration.k8s.io/v1", "APIService", METRICS_APISERVICE)
    outcome = "present"
    if present is None:
        if settings.install == "never":
            raise StepFailed(
                f"{cluster.role} cluster has no metrics API ({METRICS_APISERVICE}) and "
                f"kubernetes.metrics_server.install is 'never'"
            )
        for args in install_commands(settings)[:1]:
            cluster.kubectl(*args, timeout=command_timeout)
        if settings.kubelet_insecure_tls and not _has_insecure_flag(cluster.api):
            for args in install_commands(settings)[1:]:
                cluster.kubectl(*args, timeout=command_timeout)
        outcome = f"installed {settings.version}"
    cluster.wait_condition(
        "apiregistration.k8s.io/v1", "APIService", METRICS_APISERVICE, "Available", timeout
    )
    return outcome


def _has_insecure_flag(api: KubeApi) -> bool:
    deployment = api.get(
        "apps/v1", "Deployment", METRICS_SERVER_DEPLOYMENT, METRICS_SERVER_NAMESPACE
    )
    containers = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in containers.get("containers") or []:
        if INSECURE_TLS_FLAG in (container.get("args") or []):
            return True
    return False


@dataclass(frozen=True)
class SampleScope:
    """Containers to sample: pods in ``namespace`` of the ``cluster`` role, optionally only
    those matching ``label_selector``; ``role`` is the role on the path of every container
    there (None: the workload namespace, where each container's own name tells it, or
    ``container_roles``)."""

    cluster: str
    namespace: str
    label_selector: str | None = None
    role: str | None = None
    container_roles: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        selector = f" ({self.label_selector})" if self.label_selector else ""
        return f"{self.cluster}: {self.namespace}{selector}"


def _limits(pod: Mapping[str, Any]) -> dict[str, tuple[float | None, int | None]]:
    limits: dict[str, tuple[float | None, int | None]] = {}
    spec = pod.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        declared = (container.get("resources") or {}).get("limits") or {}
        cpu = millicores(declared["cpu"]) if declared.get("cpu") else None
        memory = byte_count(declared["memory"]) if declared.get("memory") else None
        limits[str(container.get("name"))] = (cpu, memory)
    return limits


def read_samples(
    api: KubeApi, scope: SampleScope, limits_cache: dict[tuple[str, str, str], Any]
) -> list[dict[str, Any]]:
    """One poll of ``scope``: a sample per container, in the resource-sample shape."""
    metrics = api.list(
        METRICS_API_VERSION,
        "PodMetrics",
        namespace=scope.namespace,
        label_selector=scope.label_selector,
    )
    samples = []
    for pod_metrics in metrics:
        metadata = pod_metrics.get("metadata") or {}
        pod_name = str(metadata.get("name"))
        namespace = str(metadata.get("namespace") or scope.namespace)
        key = (scope.cluster, namespace, pod_name)
        if key not in limits_cache:
            pod = api.get("v1", "Pod", pod_name, namespace)
            limits_cache[key] = _limits(pod) if pod else {}
        limits = limits_cache[key]
        for container in pod_metrics.get("containers") or []:
            usage = container.get("usage") or {}
            name = str(container.get("name"))
            cpu_limit, memory_limit = limits.get(name, (None, None))
            samples.append(
                {
                    "cluster": scope.cluster,
                    "namespace": namespace,
                    "pod": pod_name,
                    "container": name,
                    "sampled_at": str(pod_metrics.get("timestamp")),
                    "cpu_millicores": millicores(usage.get("cpu", "0")),
                    "memory_bytes": byte_count(usage.get("memory", "0")),
                    "cpu_limit_millicores": cpu_limit,
                    "memory_limit_bytes": memory_limit,
                }
            )
    return samples


class ResourceSampler:
    """Polls metrics-server in a background thread during one load-generator run.

    ``start()`` takes a first sample at once and ``stop()`` a last one, so even a short run
    has samples; samples are de-duplicated by (cluster, namespace, pod, container,
    timestamp). Sampling errors never end the run: they are counted and reported.
    """

    def __init__(
        self,
        apis: Mapping[str, KubeApi],
        scopes: Sequence[SampleScope],
        interval: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._apis = dict(apis)
        self._scopes = list(scopes)
        self._interval = interval
        self._clock = clock
        self._samples: dict[tuple[str, ...], dict[str, Any]] = {}
        self._limits: dict[tuple[str, str, str], Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.errors: list[str] = []
        self.polls = 0
        self.started_at: datetime | None = None
        self.stopped_at: datetime | None = None

    def poll(self) -> None:
        for scope in self._scopes:
            try:
                fresh = read_samples(self._apis[scope.cluster], scope, self._limits)
            except Exception as exc:
                message = f"{scope.describe()}: {type(exc).__name__}: {exc}"
                with self._lock:
                    if len(self.errors) < 20:
                        self.errors.append(message)
                log.warning("resource sampling failed for %s", message)
                continue
            with self._lock:
                for sample in fresh:
                    key = (
                        sample["cluster"],
                        sample["namespace"],
                        sample["pod"],
                        sample["container"],
                        sample["sampled_at"],
                    )
                    self._samples[key] = sample
        with self._lock:
            self.polls += 1

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll()

    def start(self) -> ResourceSampler:
        self.started_at = self._clock()
        self.poll()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval + 60)
        self.poll()
        self.stopped_at = self._clock()
        with self._lock:
            return sorted(
                self._samples.values(),
                key=lambda s: (s["sampled_at"], s["cluster"], s["pod"], s["container"]),
            )


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 time as the API server and kubelet write it; None when unreadable."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def samples_within(
    samples: Sequence[Mapping[str, Any]], started_at: datetime
) -> list[Mapping[str, Any]]:
    """Samples whose metrics window ended after the run started (older ones describe the
    cluster before the run)."""
    inside = []
    for sample in samples:
        stamp = parse_timestamp(str(sample["sampled_at"]))
        if stamp is not None and stamp > started_at:
            inside.append(sample)
    return inside


def cpu_limit_failure(
    samples: Sequence[Mapping[str, Any]], fraction: float
) -> tuple[str | None, dict[str, float]]:
    """The negative reason when a container reached ``fraction`` of its CPU limit, and the
    highest share of its limit each limited container used (``cluster/ns/pod/container``)."""
    peaks: dict[str, float] = {}
    worst: tuple[float, Mapping[str, Any]] | None = None
    for sample in samples:
        limit = sample.get("cpu_limit_millicores")
        if not limit:
            continue
        share = float(sample["cpu_millicores"]) / float(limit)
        name = f"{sample['cluster']}/{sample['namespace']}/{sample['pod']}/{sample['container']}"
        peaks[name] = max(peaks.get(name, 0.0), round(share, 4))
        if share >= fraction and (worst is None or share > worst[0]):
            worst = (share, sample)
    if worst is None:
        return None, peaks
    share, sample = worst
    return (
        f"container {sample['container']} of pod {sample['namespace']}/{sample['pod']} "
        f"({sample['cluster']} cluster) used {float(sample['cpu_millicores']):.0f}m of its "
        f"{float(sample['cpu_limit_millicores']):.0f}m CPU limit ({share:.0%} >= "
        f"{fraction:.0%}) at {sample['sampled_at']}",
        peaks,
    )
