"""An in-memory Kubernetes API for tests (there is no cluster on the build machines).

``FakeKubeApi`` implements ``meshbench.kube.api.KubeApi`` and behaves like a small cluster
with controllers that act when they are looked at: a Deployment gets a Pod that turns
Ready after ``rollout_after`` reads, a LoadBalancer Service gets an address after
``lb_after`` reads, a deleted Namespace stays Terminating for ``terminating_reads`` reads
and then disappears with everything in it, and metrics-server reports per-container usage
for running pods. Applying into a missing or terminating namespace fails as it does on a
real API server. Every call is recorded in ``calls`` for assertions.
"""

from __future__ import annotations

import copy
import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from meshbench.kube.api import FIELD_MANAGER, KubeApiError

# (apiVersion, kind) -> namespaced
KINDS: dict[tuple[str, str], bool] = {
    ("v1", "Namespace"): False,
    ("v1", "ConfigMap"): True,
    ("v1", "Secret"): True,
    ("v1", "Service"): True,
    ("v1", "ServiceAccount"): True,
    ("v1", "Pod"): True,
    ("apps/v1", "Deployment"): True,
    ("apps/v1", "DaemonSet"): True,
    ("rbac.authorization.k8s.io/v1", "Role"): True,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): True,
    ("policy/v1", "PodDisruptionBudget"): True,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): True,
    ("networking.k8s.io/v1", "NetworkPolicy"): True,
    ("storage.k8s.io/v1", "StorageClass"): False,
    ("apiregistration.k8s.io/v1", "APIService"): False,
    ("metrics.k8s.io/v1beta1", "PodMetrics"): True,
}
Key = tuple[str, str, str | None, str]  # apiVersion, kind, namespace, name


def _terms(selector: str) -> list[str]:
    """The comma-separated terms of a selector; commas inside ``in (a,b)`` sets stay."""
    return [term.strip() for term in re.split(r",(?![^(]*\))", selector)]


def matches(labels: Mapping[str, str], selector: str | None) -> bool:
    """Equality (``a=b``, ``a==b``), inequality (``a!=b``), set (``a in (x,y)``,
    ``a notin (x,y)``) and existence (``a``) terms."""
    if not selector:
        return True
    for term in _terms(selector):
        in_set = re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term)
        if in_set:
            key, operator, values = in_set.groups()
            member = labels.get(key) in {value.strip() for value in values.split(",")}
            if member != (operator == "in"):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term and term not in labels:
            return False
    return True


def _merged(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: mappings merged key by key, anything else replaced."""
    result = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeKubeApi:
    def __init__(
        self,
        name: str = "cluster",
        version: str = "v1.28.3",
        *,
        rollout_after: int = 1,
        lb_after: int = 1,
        lb_address: str | None = "198.18.0.80",
        lb_hostname: str | None = None,
        terminating_reads: int = 1,
        metrics_server: bool = True,
        metrics_server_after: int = 1,
        cpu_usage: Callable[[str, str], str] = lambda pod, container: "150m",
        memory_usage: str = "24Mi",
        image_pull_fails: bool = False,
        extra_kinds: Mapping[tuple[str, str], bool] | None = None,
        node_overhead: Callable[[], str] = lambda: "100m",
        summary_api: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.version = version
        self.rollout_after = rollout_after
        self.lb_after = lb_after
        self.lb_address = lb_address
        self.lb_hostname = lb_hostname
        self.terminating_reads = terminating_reads
        self.metrics_server_after = metrics_server_after
        self.cpu_usage = cpu_usage
        self.memory_usage = memory_usage
        self.image_pull_fails = image_pull_fails
        self.node_overhead = node_overhead
        self.summary_api = summary_api
        self.clock = clock
        # The kubelet's cumulative counters (core-nanoseconds), advanced at each container's
        # ``cpu_usage`` and the node's ``node_overhead`` on every summary read.
        self.node_cpu_ns = 0.0
        self.container_cpu_ns: dict[tuple[str, str, str], float] = {}
        self._counted_until: float | None = None
        self.kinds = {**KINDS, **(extra_kinds or {})}
        self.objects: dict[Key, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.applied: list[tuple[str, bool, dict[str, Any]]] = []
        self._reads: dict[Key, int] = {}
        self._managers: dict[Key, str] = {}  # the field manager that created each object
        self._lock = threading.RLock()
        self.metrics_server_installed = metrics_server
        if metrics_server:
            self._put_apiservice()

    # -- helpers ---------------------------------------------------------------------
    def _namespaced(self, api_version: str, kind: str) -> bool:
        if (api_version, kind) not in self.kinds:
            raise KubeApiError(
                f"the API server does not serve {kind} in {api_version} (is its CRD installed?)"
            )
        return self.kinds[(api_version, kind)]

    def _key(self, api_version: str, kind: str, name: str, namespace: str | None) -> Key:
        return (api_version, kind, namespace if self._namespaced(api_version, kind) else None, name)

    def _put_apiservice(self) -> None:
        self.objects[
            ("apiregistration.k8s.io/v1", "APIService", None, "v1beta1.metrics.k8s.io")
        ] = {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "status": {"conditions": [{"type": "Available", "status": "True"}]},
        }

    def install_metrics_server_later(self) -> None:
        """Simulate ``kubectl apply`` of metrics-server: the APIService appears (Available)
        after ``metrics_server_after`` further reads."""
        with self._lock:
            self._reads[("metrics-server", "", None, "")] = 0

    # -- controllers (run on every read) -----------------------------------------------
    def _tick(self) -> None:
        pending = ("metrics-server", "", None, "")
        if pending in self._reads:
            self._reads[pending] += 1
            if self._reads[pending] > self.metrics_server_after:
                del self._reads[pending]
                self.metrics_server_installed = True
                self._put_apiservice()
        for key, obj in list(self.objects.items()):
            _, kind, _, name = key
            if key not in self.objects:
                continue
            self._reads[key] = self._reads.get(key, 0) + 1
            reads = self._reads[key]
            if kind == "Deployment":
                self._reconcile_deployment(obj, reads)
            elif kind == "Service" and (obj.get("spec") or {}).get("type") == "LoadBalancer":
                if reads > self.lb_after and (self.lb_address or self.lb_hostname):
                    entry = {"ip": self.lb_address} if self.lb_address else {}
                    if self.lb_hostname:
                        entry = {"hostname": self.lb_hostname}
                    obj["status"] = {"loadBalancer": {"ingress": [entry]}}
            elif (
                kind == "Namespace"
                and obj["status"].get("phase") == "Terminating"
                and reads > self.terminating_reads
            ):
                for other in [k for k in self.objects if k[2] == name]:
                    self.objects.pop(other, None)
                self.objects.pop(key, None)

    def _reconcile_deployment(self, deployment: dict[str, Any], reads: int) -> None:
        metadata = deployment["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        template = deployment["spec"]["template"]
        digest = hashlib.sha256(repr(template).encode()).hexdigest()[:8]
        pod_name = f"{name}-{digest}"
        ready = reads > self.rollout_after and not self.image_pull_fails
        containers = template["spec"]["containers"]
        for key in [k for k in self.objects if k[1] == "Pod" and k[2] == namespace]:
            owner = self.objects[key]["metadata"].get("labels", {}).get("app")
            if owner == template["metadata"]["labels"].get("app") and key[3] != pod_name:
                del self.objects[key]  # the old ReplicaSet's pod
        if self.image_pull_fails:
            state = {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}
        elif ready:
            state = {"running": {"startedAt": _now()}}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        self.objects[("v1", "Pod", namespace, pod_name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": namespace,
                "labels": dict(template["metadata"].get("labels") or {}),
                "annotations": dict(template["metadata"].get("annotations") or {}),
            },
            "spec": {**copy.deepcopy(template["spec"]), "nodeName": self.node_name},
            "status": {
                "phase": "Running" if ready else "Pending",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [
                    {"name": c["name"], "ready": ready, "restartCount": 0, "state": state}
                    for c in containers
                ],
            },
        }
        replicas = int(deployment["spec"].get("replicas", 1))
        deployment["status"] = {
            "observedGeneration": metadata["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas if ready else 0,
            "readyReplicas": replicas if ready else 0,
        }

    def _pod_metrics(self, namespace: str | None) -> list[dict[str, Any]]:
        found = []
        for (_, kind, pod_namespace, pod_name), pod in self.objects.items():
            if kind != "Pod" or (namespace and pod_namespace != namespace):
                continue
            if pod["status"].get("phase") != "Running":
                continue
            found.append(
                {
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "kind": "PodMetrics",
                    "metadata": {
                        "name": pod_name,
                        "namespace": pod_namespace,
                        "labels": dict(pod["metadata"].get("labels") or {}),
                    },
                    "timestamp": _now(),
                    "window": "15s",
                    "containers": [
                        {
                            "name": c["name"],
                            "usage": {
                                "cpu": self.cpu_usage(pod_name, c["name"]),
                                "memory": self.memory_usage,
                            },
                        }
                        for c in pod["spec"]["containers"]
                    ],
                }
            )
        return found

    @property
    def node_name(self) -> str:
        """Every pod of this fake cluster runs on its one node."""
        return f"{self.name}-node-1"

    def _running_containers(self) -> list[tuple[str, str, str]]:
        return [
            (namespace, name, container["name"])
            for (_, kind, namespace, name), pod in self.objects.items()
            if kind == "Pod" and pod["status"].get("phase") == "Running"
            for container in pod["spec"]["containers"]
        ]

    def advance_counters(self) -> float:
        """Count CPU up to now at the current rates (what a kubelet refresh does)."""
        from meshbench.kube.metrics import millicores

        now = self.clock()
        elapsed = 0.0 if self._counted_until is None else max(now - self._counted_until, 0.0)
        self._counted_until = now
        node = millicores(self.node_overhead())
        for namespace, pod, container in self._running_containers():
            rate = millicores(self.cpu_usage(pod, container))
            key = (namespace, pod, container)
            self.container_cpu_ns[key] = self.container_cpu_ns.get(key, 0.0) + rate * 1e6 * elapsed
            node += rate
        self.node_cpu_ns += node * 1e6 * elapsed
        return now

    # -- KubeApi ---------------------------------------------------------------------
    def node_summary(self, node: str) -> dict[str, Any]:
        from meshbench.kube.metrics import byte_count

        with self._lock:
            self.calls.append(f"summary {node}")
            if not self.summary_api:
                raise KubeApiError(
                    f"GET /api/v1/nodes/{node}/proxy/stats/summary: HTTP 403: Forbidden"
                )
            if node != self.node_name:
                raise KubeApiError(f"GET /api/v1/nodes/{node}/proxy/stats/summary: HTTP 404")
            stamp = datetime.fromtimestamp(self.advance_counters(), UTC).isoformat()
            pods: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for namespace, pod, container in self._running_containers():
                pods.setdefault((namespace, pod), []).append(
                    {
                        "name": container,
                        "cpu": {
                            "time": stamp,
                            "usageCoreNanoSeconds": int(
                                self.container_cpu_ns.get((namespace, pod, container), 0)
                            ),
                        },
                        "memory": {"time": stamp, "workingSetBytes": byte_count(self.memory_usage)},
                    }
                )
            return {
                "node": {
                    "nodeName": node,
                    "cpu": {"time": stamp, "usageCoreNanoSeconds": int(self.node_cpu_ns)},
                },
                "pods": [
                    {"podRef": {"name": pod, "namespace": namespace}, "containers": containers}
                    for (namespace, pod), containers in pods.items()
                ],
            }

    def server_version(self) -> str:
        self.calls.append("version")
        return self.version

    def apply(
        self, manifest: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER, force: bool = True
    ) -> dict[str, Any]:
        with self._lock:
            manifest = copy.deepcopy(dict(manifest))
            api_version, kind = manifest["apiVersion"], manifest["kind"]
            metadata = manifest.setdefault("metadata", {})
            namespaced = self._namespaced(api_version, kind)
            namespace = metadata.get("namespace") if namespaced else None
            if namespaced:
                if not namespace:
                    raise KubeApiError(f"apply {kind}/{metadata.get('name')}: namespace required")
                found = self.objects.get(("v1", "Namespace", None, namespace))
                if found is None:
                    raise KubeApiError(
                        f"apply {kind}/{namespace}/{metadata['name']}: HTTP 404: namespaces "
                        f'"{namespace}" not found'
                    )
                if found["status"].get("phase") == "Terminating":
                    raise KubeApiError(
                        f"apply {kind}/{namespace}/{metadata['name']}: HTTP 403: unable to "
                        f"create new content in namespace {namespace} because it is being "
                        f"terminated"
                    )
            key = (api_version, kind, namespace, metadata["name"])
            self.calls.append(f"apply {kind} {namespace or ''}/{metadata['name']}")
            self.applied.append((field_manager, force, copy.deepcopy(manifest)))
            existing = self.objects.get(key)
            if existing is not None and self._managers.get(key, field_manager) != field_manager:
                # Another field manager's apply adds its fields to the object instead of
                # replacing it (a partial patch keeps the rest, as on a real API server).
                manifest = _merged({k: v for k, v in existing.items() if k != "status"}, manifest)
            else:
                self._managers[key] = field_manager
            generation = 1
            status: dict[str, Any] = {"phase": "Active"} if kind == "Namespace" else {}
            if existing is not None:
                generation = existing["metadata"]["generation"]
                if existing.get("spec") != manifest.get("spec"):
                    generation += 1
                    self._reads[key] = 0
                status = existing.get("status") or status
            manifest["metadata"]["generation"] = generation
            manifest["status"] = status
            self.objects[key] = manifest
            return copy.deepcopy(manifest)

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(f"get {kind} {namespace or ''}/{name}")
            self._tick()
            key = self._key(api_version, kind, name, namespace)
            found = self.objects.get(key)
            return copy.deepcopy(found) if found is not None else None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            self.calls.append(f"list {kind} {namespace or '*'} {label_selector or ''}".rstrip())
            self._tick()
            if (api_version, kind) == ("metrics.k8s.io/v1beta1", "PodMetrics"):
                if not self.metrics_server_installed:
                    raise KubeApiError("the server could not find the requested resource")
                items = self._pod_metrics(namespace)
            else:
                self._namespaced(api_version, kind)
                items = [
                    obj
                    for (v, k, ns, _), obj in self.objects.items()
                    if v == api_version and k == kind and (namespace is None or ns == namespace)
                ]
            return [
                copy.deepcopy(item)
                for item in items
                if matches((item.get("metadata") or {}).get("labels") or {}, label_selector)
            ]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        with self._lock:
            self.calls.append(f"delete {kind} {namespace or ''}/{name}")
            key = self._key(api_version, kind, name, namespace)
            found = self.objects.get(key)
            if found is None:
                return False
            if kind == "Namespace":
                found["status"]["phase"] = "Terminating"
                self._reads[key] = 0
            else:
                del self.objects[key]
            return True
