"""What a measured run cost on Kubernetes, container by container, and on the nodes as a whole.

The kubelet's Summary API (``/api/v1/nodes/<node>/proxy/stats/summary``) gives cumulative
CPU counters (``usageCoreNanoSeconds``) of every node and of each container on it, stamped
with the time the kubelet read them (it refreshes them every 10-15 s). A :class:`CostMeter`
reads the nodes that host the path's pods three times:

1. before an idle window right before the run, and 2. after it: the idle rate of each node
   and of each container on the path;
3. once the counters are stamped after the run's end.

From these, with ``D`` the run's duration and ``E`` the part of the counter window (reading 2
to reading 3) outside the run:

- a container's cost is its counter difference less its idle rate over ``E``;
- a node's busy time over the run is its counter difference less its idle rate over ``E``,
  less what the node ran besides the path at idle (the node's idle rate less the path's
  containers' idle rates) over ``D``: kubelet, container runtime, other pods;
- the nodes' busy time less the containers' cost is the unattributed part: the kernel's
  work that no container is charged for (softirq for the traffic, interrupts) and any
  change in the background.

Where the Summary API is refused (RBAC ``get`` on ``nodes/proxy``) or switched off, each
container's cost comes from the metrics-server samples taken during the run (their mean
rate over the run's duration), and there is no node figure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from meshbench.config import ResourceCostSettings
from meshbench.cost import (
    CLIENT_PROXY,
    LOAD_GENERATOR,
    SERVER_APP,
    SERVER_PROXY,
    cost_record,
)
from meshbench.kube.api import SUMMARY_PATH, KubeApi
from meshbench.kube.metrics import SampleScope, parse_timestamp, samples_within
from meshbench.workloads.kubernetes import FORTIO, NGINX

log = logging.getLogger(__name__)

NODE_SOURCE = "node"
SAMPLES_SOURCE = "metrics-server"
# How often the counters are read again while waiting for fresher ones.
REREAD_INTERVAL = 2.0
WORKLOAD_ROLES = {FORTIO: LOAD_GENERATOR, NGINX: SERVER_APP}

ContainerKey = tuple[str, str, str, str]  # cluster, namespace, pod, container


def container_role(scope: SampleScope, container: str) -> str:
    """The role of ``container`` on the path: its scope's, else the workload's own
    containers by name, else the sidecar the mesh injected beside them."""
    if scope.role:
        return scope.role
    named = dict(scope.container_roles)
    if container in named:
        return named[container]
    if container in WORKLOAD_ROLES:
        return WORKLOAD_ROLES[container]
    return CLIENT_PROXY if scope.cluster == "client" else SERVER_PROXY


def _stamp(text: Any) -> datetime | None:
    return parse_timestamp(str(text)) if text else None


@dataclass(frozen=True)
class Counter:
    """A cumulative CPU counter as the kubelet last read it."""

    stamp: datetime
    core_nanoseconds: int

    def rate_since(self, earlier: Counter) -> float | None:
        """Cores used on average between ``earlier`` and this reading."""
        seconds = (self.stamp - earlier.stamp).total_seconds()
        if seconds <= 0:
            return None
        return max(self.core_nanoseconds - earlier.core_nanoseconds, 0) / 1e9 / seconds


@dataclass(frozen=True)
class NodeReading:
    cluster: str
    node: str
    node_cpu: Counter
    containers: dict[ContainerKey, Counter]
    working_set: dict[ContainerKey, int]


def read_node(api: KubeApi, cluster: str, node: str) -> NodeReading:
    """One Summary API document of ``node``, reduced to its CPU counters and working sets."""
    document = api.node_summary(node)
    cpu = (document.get("node") or {}).get("cpu") or {}
    stamp = _stamp(cpu.get("time"))
    if stamp is None or cpu.get("usageCoreNanoSeconds") is None:
        raise ValueError(f"{cluster} cluster, node {node}: the summary has no node CPU counter")
    containers: dict[ContainerKey, Counter] = {}
    working_set: dict[ContainerKey, int] = {}
    for pod in document.get("pods") or []:
        ref = pod.get("podRef") or {}
        for container in pod.get("containers") or []:
            key = (cluster, str(ref.get("namespace")), str(ref.get("name")), container["name"])
            counters = container.get("cpu") or {}
            container_stamp = _stamp(counters.get("time"))
            if container_stamp is not None and counters.get("usageCoreNanoSeconds") is not None:
                containers[key] = Counter(container_stamp, int(counters["usageCoreNanoSeconds"]))
            memory = (container.get("memory") or {}).get("workingSetBytes")
            if memory is not None:
                working_set[key] = int(memory)
    return NodeReading(
        cluster, node, Counter(stamp, int(cpu["usageCoreNanoSeconds"])), containers, working_set
    )


@dataclass
class PathContainer:
    cluster: str
    namespace: str
    pod: str
    container: str
    node: str | None
    role: str
    name: str  # stable across runs: the pod's app label and the container

    @property
    def key(self) -> ContainerKey:
        return (self.cluster, self.namespace, self.pod, self.container)


def locate(apis: Mapping[str, KubeApi], scopes: Sequence[SampleScope]) -> list[PathContainer]:
    """The containers of ``scopes`` and the nodes they run on, from the live pods."""
    found: dict[ContainerKey, PathContainer] = {}
    for scope in scopes:
        pods = apis[scope.cluster].list(
            "v1", "Pod", namespace=scope.namespace, label_selector=scope.label_selector
        )
        for pod in pods:
            if (pod.get("status") or {}).get("phase") != "Running":
                continue
            metadata = pod.get("metadata") or {}
            labels = metadata.get("labels") or {}
            app = labels.get("app") or labels.get("app.kubernetes.io/name") or metadata["name"]
            for container in (pod.get("spec") or {}).get("containers") or []:
                entry = PathContainer(
                    scope.cluster,
                    str(metadata.get("namespace") or scope.namespace),
                    str(metadata["name"]),
                    str(container["name"]),
                    (pod.get("spec") or {}).get("nodeName"),
                    container_role(scope, str(container["name"])),
                    f"{app}/{container['name']}",
                )
                # A scope that names its role is more specific than the workload namespace.
                if entry.key not in found or scope.role is not None:
                    found[entry.key] = entry
    return list(found.values())


@dataclass
class CostMeter:
    """Measures one run's cost: ``begin()`` right before the load starts, ``finish()``
    right after it ends. Never raises: what could not be read is said in the record."""

    apis: Mapping[str, KubeApi]
    scopes: Sequence[SampleScope]
    settings: ResourceCostSettings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep
    containers: list[PathContainer] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _idle: dict[tuple[str, str], NodeReading] = field(default_factory=dict)
    _start: dict[tuple[str, str], NodeReading] = field(default_factory=dict)

    @property
    def nodes(self) -> list[tuple[str, str]]:
        return sorted({(c.cluster, c.node) for c in self.containers if c.node})

    def _read_all(self) -> dict[tuple[str, str], NodeReading]:
        return {
            (cluster, node): read_node(self.apis[cluster], cluster, node)
            for cluster, node in self.nodes
        }

    def _read_until(
        self, newer_than: Callable[[NodeReading], datetime], wait: float
    ) -> dict[tuple[str, str], NodeReading]:
        """Readings of every node once each is stamped after ``newer_than`` of it, waiting
        at least ``wait`` seconds and at most that plus the fresh-stats timeout; the last
        readings when the kubelet did not refresh in time (said in ``problems``)."""
        if wait > 0:
            self.sleep(wait)
        deadline = self.clock() + timedelta(seconds=self.settings.fresh_stats_timeout)
        while True:
            readings = self._read_all()
            stale = [
                f"{key[0]}/{key[1]}"
                for key, reading in readings.items()
                if reading.node_cpu.stamp <= newer_than(reading)
            ]
            if not stale:
                return readings
            if self.clock() >= deadline:
                self.problems.append(
                    f"the kubelet of {', '.join(stale)} did not refresh its counters within "
                    f"{self.settings.fresh_stats_timeout:g}s"
                )
                return readings
            self.sleep(REREAD_INTERVAL)

    def begin(self) -> None:
        try:
            self.containers = locate(self.apis, self.scopes)
        except Exception as exc:
            self.problems.append(f"listing the path's pods failed: {type(exc).__name__}: {exc}")
            return
        if not self.settings.node_counters:
            return
        try:
            self._idle = self._read_all()
            self._start = self._read_until(
                lambda reading: self._idle[(reading.cluster, reading.node)].node_cpu.stamp,
                self.settings.idle_seconds,
            )
        except Exception as exc:
            self._idle, self._start = {}, {}
            self.problems.append(
                f"{SUMMARY_PATH} could not be read ({type(exc).__name__}: {exc}); costs come "
                "from metrics-server samples"
            )

    def finish(
        self,
        run_ended: datetime,
        duration: float,
        requests: int,
        samples: Sequence[Mapping[str, Any]],
        run_started: datetime,
    ) -> dict[str, Any]:
        """The run's cost record (the shape of ``meshbench.cost.cost_record``)."""
        during = samples_within(samples, run_started)
        record: dict[str, Any] | None = None
        if self._start:
            try:
                end = self._read_until(lambda reading: run_ended, 0.0)
                record = self._from_counters(end, duration, requests, during)
            except Exception as exc:
                self.problems.append(
                    f"reading the nodes after the run failed ({type(exc).__name__}: {exc}); "
                    "costs come from metrics-server samples"
                )
        if record is None:
            record = self._from_samples(during, duration, requests)
        record["duration_seconds"] = round(duration, 3)
        if self.problems:
            record["problems"] = list(self.problems)
        return record

    def _peak_memory(
        self,
        container: PathContainer,
        readings: Sequence[Mapping[tuple[str, str], NodeReading]],
        samples: Sequence[Mapping[str, Any]],
    ) -> int | None:
        seen = [
            reading.working_set[container.key]
            for nodes in readings
            for reading in nodes.values()
            if container.key in reading.working_set
        ]
        seen += [
            int(sample["memory_bytes"])
            for sample in samples
            if (sample["cluster"], sample["namespace"], sample["pod"], sample["container"])
            == container.key
        ]
        return max(seen) if seen else None

    def _from_counters(
        self,
        end: Mapping[tuple[str, str], NodeReading],
        duration: float,
        requests: int,
        samples: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        components: dict[tuple[str, str, str], dict[str, Any]] = {}
        path_idle_rate: dict[tuple[str, str], float] = {}
        for container in self.containers:
            node = (container.cluster, container.node or "")
            if node not in end:
                continue
            idle = self._idle[node].containers.get(container.key)
            first = self._start[node].containers.get(container.key)
            last = end[node].containers.get(container.key)
            if first is None or last is None:
                self.problems.append(f"no CPU counter for {'/'.join(container.key)}")
                continue
            idle_rate = (first.rate_since(idle) if idle else None) or 0.0
            path_idle_rate[node] = path_idle_rate.get(node, 0.0) + idle_rate
            seconds = _run_seconds(first, last, idle_rate, duration)
            merged = _component(components, container, NODE_SOURCE)
            merged["cpu_seconds"] += seconds
            peak = self._peak_memory(container, [self._start, end], samples)
            if peak is not None:
                merged["peak_memory_bytes"] = max(merged["peak_memory_bytes"] or 0, peak)
        nodes = []
        for node, reading in sorted(end.items()):
            idle_rate = reading_rate(self._start[node], self._idle[node])
            busy = _run_seconds(self._start[node].node_cpu, reading.node_cpu, idle_rate, duration)
            background = max(idle_rate - path_idle_rate.get(node, 0.0), 0.0) * duration
            nodes.append(
                {
                    "cluster": node[0],
                    "node": node[1],
                    "busy_seconds": round(busy, 4),
                    "idle_background_seconds": round(background, 4),
                    "idle_cores": round(idle_rate, 4),
                }
            )
        busy_total = sum(n["busy_seconds"] for n in nodes)
        background_total = sum(n["idle_background_seconds"] for n in nodes)
        record = cost_record(
            components.values(),
            requests,
            busy_seconds=max(busy_total - background_total, 0.0),
            machine={
                "nodes_busy_seconds": round(busy_total, 4),
                "idle_background_seconds": round(background_total, 4),
                "nodes": nodes,
            },
        )
        return record | {"source": NODE_SOURCE}

    def _from_samples(
        self, samples: Sequence[Mapping[str, Any]], duration: float, requests: int
    ) -> dict[str, Any]:
        by_container: dict[ContainerKey, list[Mapping[str, Any]]] = {}
        for sample in samples:
            key = (sample["cluster"], sample["namespace"], sample["pod"], sample["container"])
            by_container.setdefault(key, []).append(sample)
        components: dict[tuple[str, str, str], dict[str, Any]] = {}
        for container in self.containers:
            taken = by_container.get(container.key)
            if not taken:
                continue
            mean_cores = sum(float(s["cpu_millicores"]) for s in taken) / len(taken) / 1000
            merged = _component(components, container, SAMPLES_SOURCE)
            merged["cpu_seconds"] += mean_cores * duration
            peak = max(int(s["memory_bytes"]) for s in taken)
            merged["peak_memory_bytes"] = max(merged["peak_memory_bytes"] or 0, peak)
        record = cost_record(components.values(), requests, busy_seconds=None)
        return record | {"source": SAMPLES_SOURCE}


def _component(
    components: dict[tuple[str, str, str], dict[str, Any]], container: PathContainer, source: str
) -> dict[str, Any]:
    """The component ``container`` counts towards: the pods of one app (a DaemonSet's on
    each node, say) are one component of their cluster and role."""
    return components.setdefault(
        (container.cluster, container.role, container.name),
        {
            "name": container.name,
            "role": container.role,
            "cluster": container.cluster,
            "source": source,
            # Container counters do not split user and system time.
            "cpu_user_seconds": None,
            "cpu_system_seconds": None,
            "cpu_seconds": 0.0,
            "peak_memory_bytes": None,
        },
    )


def reading_rate(later: NodeReading, earlier: NodeReading) -> float:
    return later.node_cpu.rate_since(earlier.node_cpu) or 0.0


def _run_seconds(first: Counter, last: Counter, idle_rate: float, duration: float) -> float:
    """CPU seconds over the run from two readings around it: the counter difference less the
    idle rate over the part of the window outside the run; a window shorter than the run
    (the kubelet did not refresh in time) is scaled up to the run's duration."""
    window = (last.stamp - first.stamp).total_seconds()
    used = max(last.core_nanoseconds - first.core_nanoseconds, 0) / 1e9
    if window <= 0:
        return 0.0
    if window < duration:
        return used * duration / window
    return max(used - idle_rate * (window - duration), 0.0)
