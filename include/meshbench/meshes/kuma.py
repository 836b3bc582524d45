"""Kuma multi-zone without egress, installed and removed once per iteration.

Facts and sources: mesh-recipes.md section 2 (kuma.io multi-zone, mutual-TLS and protocol
docs; kumahq/kuma 2.4.3 chart, kumactl and API server) and kumahq/kuma's UPGRADE.md up to
v2.14.3 for what changed since. Per iteration:

1. the global control plane in the configured cluster and namespace. The study's
   placement (next to a zone, in-memory store) is the default and the plan warns about it;
   ``store: postgres`` uses an Airflow connection. It is rendered with ``helm template``
   in "universal on Kubernetes" mode (no CRDs, no webhooks, so it cannot clash with the
   zone control plane in the same cluster) and applied server-side; with the memory store
   the chart's ``migration`` init container is dropped (``kuma-cp migrate`` refuses the
   memory store). Its KDS Service ``kuma-global-zone-sync`` (5685) is a LoadBalancer,
   given the environment's load-balancer settings for both clusters (both zones use it);
2. Mesh ``default`` with builtin-CA mTLS through the global's API (cross-zone traffic is
   routed by SNI and needs mTLS). From 2.6 a new Mesh no longer gets an allow-all
   TrafficPermission, so a MeshTrafficPermission allowing all goes in first;
3. a zone control plane per cluster (helm, ``controlPlane.mode=zone``, zone ingress on,
   KDS address ``grpcs://<global>:5685``), with every sidecar's and the ingress's
   resources set to the shared proxy resources (2.14 removed the sidecar CPU limit); the
   ingress Service gets the environment's annotations from the values and its source
   ranges from a patch right after helm (the chart has no value for them).

Readiness: control planes and ingresses rolled out, ingress addresses assigned, both zones
Online in the global (``/zones+insights``: ``get zones`` shows no status in 2.4), each
zone's ingress Online with an advertised address, the Mesh's mTLS backend active.
Workloads: namespace label ``kuma.io/sidecar-injection: enabled`` and ``appProtocol:
http`` on nginx's Service, so Kuma proxies HTTP (L7) as Istio does; the study measured
Kuma as TCP.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml

from meshbench.backend import RunContext, StepFailed
from meshbench.config import BenchmarkConfig, KumaMesh
from meshbench.kube.cluster import Clusters, KubeCluster
from meshbench.kube.load_balancers import NO_POLICY, LoadBalancerPolicy, policy_patch_op
from meshbench.kube.metrics import SampleScope
from meshbench.kube.ops import Op, apply_op, call_op, delete_op, wait_op
from meshbench.kube.redact import format_command
from meshbench.kube.waits import Readiness, load_balancer_state, wait_for
from meshbench.meshes import inventory
from meshbench.meshes.common import (
    ROLES,
    Component,
    ComponentMeshInstaller,
    at_least,
    cli_op,
    delete_crds_op,
    managed_labels,
    namespace_manifest,
    phase,
    render,
    require_version,
    resources_record,
    step_text,
    support_check,
)
from meshbench.workloads.kubernetes import NGINX, NGINX_PORT, WorkloadProfile

ZONE_NAMESPACE = "kuma-system"
RELEASE = "kuma"
CONTROL_PLANE = "kuma-control-plane"
INGRESS = "kuma-ingress"
GLOBAL_SYNC_SERVICE = "kuma-global-zone-sync"
KDS_PORT = 5685
API_PORT = 5681
MESH = "default"
CA_BACKEND = "ca-1"
ALLOW_ALL = "allow-all"
POSTGRES_SECRET = "kuma-global-postgres"
INJECTION_LABEL = "kuma.io/sidecar-injection"
# Kinds a namespaced "universal on Kubernetes" global may render; anything cluster-scoped
# would be shared with the zone control plane in the same cluster, so it is refused.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "APIService",
        "PriorityClass",
        "GatewayClass",
        "StorageClass",
    }
)
HELM_HOOK = "helm.sh/hook"


def service_name(namespace: str) -> str:
    """The ``kuma.io/service`` tag Kuma generates for nginx's Service port 80."""
    return f"{NGINX}_{namespace}_svc_{NGINX_PORT}"


def mesh_resource(mtls: bool) -> dict[str, Any]:
    """Mesh ``default`` in the universal format the global's API takes (mutual-tls.md)."""
    mesh: dict[str, Any] = {"type": "Mesh", "name": MESH}
    if mtls:
        mesh["mtls"] = {
            "enabledBackend": CA_BACKEND,
            "backends": [
                {
                    "name": CA_BACKEND,
                    "type": "builtin",
                    "dpCert": {"rotation": {"expiration": "1d"}},
                    "conf": {"caCert": {"RSAbits": 2048, "expiration": "10y"}},
                }
            ],
        }
    return mesh


def allow_all_permission() -> dict[str, Any]:
    return {
        "type": "MeshTrafficPermission",
        "name": ALLOW_ALL,
        "mesh": MESH,
        "spec": {
            "targetRef": {"kind": "Mesh"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}],
        },
    }


def needs_traffic_permission(version: str) -> bool:
    """From 2.6 a new Mesh gets no allow-all TrafficPermission (UPGRADE.md, 2.6.x)."""
    return at_least(version, "2.6")


def _online(insight: Mapping[str, Any] | None) -> bool:
    """Online: some KDS subscription connected and not disconnected (zone_insight_helpers)."""
    for subscription in (insight or {}).get("subscriptions") or []:
        if subscription.get("connectTime") and not subscription.get("disconnectTime"):
            return True
    return False


def zones_state(document: Mapping[str, Any], zones: Sequence[str]) -> Readiness:
    """From ``GET /zones+insights``: every zone in ``zones`` enabled and Online."""
    items = {item.get("name"): item for item in document.get("items") or []}
    pending = []
    for zone in zones:
        item = items.get(zone)
        if item is None:
            pending.append(f"zone {zone} has not connected to the global control plane")
            continue
        if (item.get("zone") or {}).get("enabled") is False:
            pending.append(f"zone {zone} is disabled")
        elif not _online(item.get("zoneInsight")):
            pending.append(f"zone {zone} is Offline")
    return Readiness(not pending, tuple(pending), sorted(items))


def zone_ingresses_state(document: Mapping[str, Any], zones: Sequence[str]) -> Readiness:
    """From ``GET /zoneingresses+insights``: each zone has an Online ingress advertising an
    address (an ingress without one cannot carry cross-zone traffic)."""
    found: dict[str, list[Mapping[str, Any]]] = {}
    for item in document.get("items") or []:
        zone = (item.get("zoneIngress") or {}).get("zone")
        found.setdefault(str(zone), []).append(item)
    pending = []
    addresses = {}
    for zone in zones:
        ingresses = found.get(zone, [])
        if not ingresses:
            pending.append(f"zone {zone}: no zone ingress known to the global control plane")
            continue
        good = [
            item
            for item in ingresses
            if _online(item.get("zoneIngressInsight"))
            and ((item.get("zoneIngress") or {}).get("networking") or {}).get("advertisedAddress")
        ]
        if not good:
            states = [
                f"{item.get('name')}: "
                f"{'Online' if _online(item.get('zoneIngressInsight')) else 'Offline'}, "
                f"advertised address "
                f"{((item.get('zoneIngress') or {}).get('networking') or {}).get('advertisedAddress') or 'none'}"  # noqa: E501
                for item in ingresses
            ]
            pending.append(f"zone {zone}: " + "; ".join(states))
            continue
        networking = good[0]["zoneIngress"]["networking"]
        addresses[zone] = f"{networking['advertisedAddress']}:{networking.get('advertisedPort')}"
    return Readiness(not pending, tuple(pending), addresses)


def filter_global_objects(
    documents: Sequence[Any], namespace: str, store: str
) -> list[dict[str, Any]]:
    """The rendered global control plane as meshbench applies it: helm hooks dropped
    (nothing runs them), the ``migration`` init container dropped for the memory store,
    every object in ``namespace``; a cluster-scoped object is an error."""
    objects = []
    for document in documents:
        if not isinstance(document, dict) or not document.get("kind"):
            continue
        metadata = document.setdefault("metadata", {})
        if HELM_HOOK in (metadata.get("annotations") or {}):
            continue
        if document["kind"] in CLUSTER_SCOPED_KINDS:
            raise StepFailed(
                f"the global control plane chart rendered cluster-scoped {document['kind']} "
                f"{metadata.get('name')}: it would be shared with the zone control plane"
            )
        metadata["namespace"] = namespace
        if store == "memory" and document["kind"] == "Deployment":
            pod = document["spec"]["template"]["spec"]
            pod["initContainers"] = [
                c for c in pod.get("initContainers") or [] if c.get("name") != "migration"
            ]
            if not pod["initContainers"]:
                del pod["initContainers"]
        objects.append(document)
    return objects


class KumaApi:
    """The global control plane's HTTP API through a port-forward."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            response = requests.request(
                method, f"{self.base_url}{path}", json=body, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise StepFailed(f"Kuma API {method} {path}: {exc}") from None
        if method == "DELETE" and response.status_code == 404:
            return None
        if response.status_code >= 300:
            raise StepFailed(
                f"Kuma API {method} {path}: HTTP {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else None

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def put(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._call("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)


class KumaInstaller(ComponentMeshInstaller):
    name = "kuma"
    api_poll_interval = 5.0

    def __init__(self, config: BenchmarkConfig) -> None:
        super().__init__(config)
        self.settings: KumaMesh = config.meshes.kuma
        self.timeouts = config.kubernetes.timeouts

    # ------------------------------------------------------------------ names
    @property
    def global_role(self) -> str:
        return self.settings.global_control_plane.cluster

    @property
    def global_namespace(self) -> str:
        return self.settings.global_control_plane.namespace

    def zone(self, role: str) -> str:
        return getattr(self.settings.zone_names, role)

    @property
    def zones(self) -> list[str]:
        return [self.zone(role) for role in ROLES]

    # ------------------------------------------------------------------ helm arguments
    def _chart(self, version: str) -> list[str]:
        return [
            RELEASE,
            "kuma",
            "--repo",
            self.settings.chart_repository,
            "--version",
            version.lstrip("v"),
        ]

    def global_values(self) -> dict[str, Any]:
        """Helm values of the global: universal on Kubernetes, the configured store. With
        Postgres the connection comes from a Secret (names here, values never)."""
        store = self.settings.global_control_plane
        control_plane: dict[str, Any] = {
            "mode": "global",
            "environment": "universal",
            "envVars": {"KUMA_STORE_TYPE": store.store},
        }
        if store.store == "postgres":
            control_plane["secrets"] = {
                name: {"Secret": POSTGRES_SECRET, "Key": name, "Env": env}
                for name, env in (
                    ("host", "KUMA_STORE_POSTGRES_HOST"),
                    ("port", "KUMA_STORE_POSTGRES_PORT"),
                    ("user", "KUMA_STORE_POSTGRES_USER"),
                    ("password", "KUMA_STORE_POSTGRES_PASSWORD"),
                    ("db", "KUMA_STORE_POSTGRES_DB_NAME"),
                )
            }
        return {"controlPlane": control_plane}

    def global_template_args(self, version: str, values_file: str) -> list[str]:
        return [
            "template",
            *self._chart(version),
            "--namespace",
            self.global_namespace,
            "--values",
            values_file,
        ]

    def _global_render_detail(
        self, version: str, then: str, load_balancer: LoadBalancerPolicy
    ) -> str:
        detail = (
            format_command(
                ["helm", *self.global_template_args(version, "<tmp>/global-values.yaml")]
            )
            + "\n# <tmp>/global-values.yaml\n"
            + render([self.global_values()])
            + f"\n# then: {then}"
        )
        if not load_balancer.is_empty:
            detail += (
                f"\n---\n# the rendered LoadBalancer Service {GLOBAL_SYNC_SERVICE} gets the "
                f"environment's settings (both zones connect to it):\n"
                + render([load_balancer.service_patch(self.global_namespace, GLOBAL_SYNC_SERVICE)])
            )
        return detail

    def zone_values(self, load_balancer: LoadBalancerPolicy) -> dict[str, Any]:
        """Helm values for a zone beyond the ``--set`` arguments: the environment's
        annotations on the zone ingress Service, so its load balancer is made as the
        environment needs it (the chart has no value for source ranges: they are patched
        right after)."""
        if not load_balancer.annotations:
            return {}
        return {"ingress": {"service": {"annotations": dict(load_balancer.annotations)}}}

    def zone_install_args(
        self,
        version: str,
        role: str,
        kds_address: str,
        values_file: str | None = None,
        wait: bool = True,
    ) -> list[str]:
        """``wait=False`` when the ingress Service is patched right after: helm then returns
        once the objects exist, so the Service gets the environment's source ranges
        before its load balancer is up rather than minutes after (wait_mesh_ready waits
        for the rollouts and the address either way)."""
        proxy = self.config.kubernetes.proxy_resources
        args = [
            "upgrade",
            "--install",
            *self._chart(version),
            "--namespace",
            ZONE_NAMESPACE,
            *(["--wait"] if wait else []),
            "--timeout",
            f"{int(self.timeouts.rollout)}s",
            "--set",
            "controlPlane.mode=zone",
            "--set",
            f"controlPlane.zone={self.zone(role)}",
            "--set",
            "ingress.enabled=true",
            "--set",
            f"controlPlane.kdsGlobalAddress=grpcs://{kds_address}:{KDS_PORT}",
            # The global's KDS certificate is self-signed (multi-zone.md).
            "--set",
            "controlPlane.tls.kdsZoneClient.skipVerify=true",
        ]
        # Every sidecar and the zone ingress get the shared proxy resources.
        for env, value in (
            ("REQUESTS_CPU", proxy.cpu_request),
            ("REQUESTS_MEMORY", proxy.memory_request),
            ("LIMITS_CPU", proxy.cpu_limit),
            ("LIMITS_MEMORY", proxy.memory_limit),
        ):
            args += [
                "--set-string",
                f"controlPlane.envVars.KUMA_INJECTOR_SIDECAR_CONTAINER_RESOURCES_{env}={value}",
            ]
        for key, value in (
            ("requests.cpu", proxy.cpu_request),
            ("requests.memory", proxy.memory_request),
            ("limits.cpu", proxy.cpu_limit),
            ("limits.memory", proxy.memory_limit),
        ):
            args += ["--set-string", f"ingress.resources.{key}={value}"]
        if values_file:
            args += ["--values", values_file]
        return args

    # ------------------------------------------------------------------ the global's API
    @contextlib.contextmanager
    def global_api(self, clusters: Clusters) -> Iterator[KumaApi]:
        cluster = clusters[self.global_role]
        with cluster.port_forward(self.global_namespace, f"svc/{CONTROL_PLANE}", API_PORT) as pf:
            yield KumaApi(pf.url)

    def _global_exists(self, cluster: KubeCluster) -> bool:
        return (
            cluster.api.get("apps/v1", "Deployment", CONTROL_PLANE, self.global_namespace)
            is not None
        )

    def _api_op(
        self,
        step_phase: str,
        description: str,
        calls: Sequence[tuple[str, str, Mapping[str, Any] | None]],
        teardown: bool = False,
    ) -> Op:
        """API calls on the global, in order. A teardown call finding the global gone
        succeeds: whatever it held went with it."""
        role = self.global_role
        detail = (
            f"kubectl port-forward --namespace {self.global_namespace} svc/{CONTROL_PLANE} "
            f":{API_PORT}\n"
        )
        for method, path, body in calls:
            detail += f"{method} {path}"
            if body is not None:
                detail += "\n" + render([body])
            detail += "\n"

        def action(clusters: Clusters) -> dict[str, Any] | None:
            if teardown and not self._global_exists(clusters[role]):
                return {"kuma_global": "already gone"}
            with self.global_api(clusters) as api:
                for method, path, body in calls:
                    if method == "PUT":
                        assert body is not None
                        api.put(path, body)
                    elif method == "DELETE":
                        api.delete(path)
                    else:
                        api.get(path)
            return None

        return call_op(step_phase, role, "http", description, action, detail.rstrip())

    def _api_wait_op(
        self,
        step_phase: str,
        description: str,
        path: str,
        judge: Any,
        record_as: str,
        detail: str,
    ) -> Op:
        def action(clusters: Clusters) -> dict[str, Any]:
            with self.global_api(clusters) as api:
                value = wait_for(
                    lambda: judge(api.get(path) or {}),
                    what=f"{self.global_role} cluster: {description}",
                    timeout=self.timeouts.rollout,
                    interval=self.api_poll_interval,
                )
            return {record_as: value}

        return call_op(
            step_phase,
            self.global_role,
            "wait",
            description,
            action,
            f"kubectl port-forward --namespace {self.global_namespace} svc/{CONTROL_PLANE} "
            f":{API_PORT}\nGET {path} every {self.api_poll_interval:g}s, up to "
            f"{self.timeouts.rollout:g}s: {detail}",
        )

    # ------------------------------------------------------------------ components
    def _render_global(
        self, clusters: Clusters, version: str, load_balancer: LoadBalancerPolicy
    ) -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="meshbench-") as folder:
            values = Path(folder) / "global-values.yaml"
            values.write_text(render([self.global_values()]), encoding="utf-8")
            result = clusters[self.global_role].run(
                "helm",
                self.global_template_args(version, str(values)),
                timeout=self.timeouts.command,
                # The rendering holds the global's generated TLS key: never logged.
                secret_output=True,
            )
        documents = list(yaml.safe_load_all(result.stdout))
        objects = filter_global_objects(
            documents, self.global_namespace, self.settings.global_control_plane.store
        )
        return [load_balancer.apply_to(obj) for obj in objects]

    def _postgres_secret(self, ctx: RunContext) -> dict[str, Any]:
        from airflow.sdk import BaseHook

        conn_id = self.settings.global_control_plane.postgres_conn_id
        connection = BaseHook.get_connection(str(conn_id))
        values = {
            "host": connection.host or "",
            "port": str(connection.port or 5432),
            "user": connection.login or "",
            "password": connection.password or "",
            "db": connection.schema or "kuma",
        }
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": POSTGRES_SECRET,
                "namespace": self.global_namespace,
                "labels": managed_labels(ctx),
            },
            "type": "Opaque",
            "stringData": values,
        }

    def _apply_postgres_secret(self, clusters: Clusters, ctx: RunContext) -> None:
        clusters[self.global_role].apply([self._postgres_secret(ctx)])

    def components(self, ctx: RunContext, iteration: int) -> list[Component]:
        install = phase(iteration, "install_mesh")
        uninstall = phase(iteration, "uninstall_mesh")
        version = require_version(ctx, self.name)
        key = f"before-iteration-{iteration:02d}"
        store = self.settings.global_control_plane
        g = self.global_role
        timeouts = self.timeouts

        inventory_part = Component("inventory")
        for role in ROLES:
            inventory_part.install.append(
                inventory.record_op(install, role, ctx, key, "Kuma is installed")
            )
            inventory_part.uninstall.append(
                inventory.verify_op(
                    uninstall, role, ctx, key, "Kuma was installed", timeouts.namespace_deletion
                )
            )

        # -- global control plane
        global_part = Component("global control plane")
        global_part.install.append(
            apply_op(
                install,
                g,
                [namespace_manifest(self.global_namespace, managed_labels(ctx))],
                step_text("global control plane", f"namespace {self.global_namespace}"),
            )
        )
        if store.store == "postgres":
            global_part.install.append(
                call_op(
                    install,
                    g,
                    "manifest",
                    step_text(
                        "global control plane",
                        f"Secret {self.global_namespace}/{POSTGRES_SECRET} from Airflow "
                        f"connection {store.postgres_conn_id!r}",
                    ),
                    lambda clusters: self._apply_postgres_secret(clusters, ctx),
                    "keys host, port, user, password, db (values never shown)",
                )
            )

        # Both zones' control planes, one of them in the global's own cluster, connect to
        # the KDS load balancer.
        global_load_balancer = self.load_balancer_policy(ctx, g, ROLES)

        def apply_global(clusters: Clusters) -> dict[str, Any]:
            objects = self._render_global(clusters, version, global_load_balancer)
            clusters[g].apply(objects)
            return {"kuma_global_objects": len(objects)}

        global_part.install += [
            call_op(
                install,
                g,
                "manifest",
                step_text(
                    "global control plane",
                    f"Kuma {version} global (universal on Kubernetes, {store.store} store) in "
                    f"{self.global_namespace}, rendered by helm and applied server-side",
                ),
                apply_global,
                self._global_render_detail(
                    version,
                    "drop helm hooks"
                    + (
                        ", drop the 'migration' init container (memory store)"
                        if store.store == "memory"
                        else ""
                    )
                    + f"; refuse cluster-scoped objects; server-side apply in "
                    f"{self.global_namespace}",
                    global_load_balancer,
                ),
            ),
            wait_op(
                install,
                g,
                step_text(
                    "global control plane",
                    f"deployment {self.global_namespace}/{CONTROL_PLANE} rolled out",
                ),
                lambda cluster: cluster.wait_rollout(
                    self.global_namespace, CONTROL_PLANE, timeouts.rollout
                ),
                f"poll apps/v1 Deployment {self.global_namespace}/{CONTROL_PLANE}, up to "
                f"{timeouts.rollout:g}s",
            ),
            wait_op(
                install,
                g,
                step_text(
                    "global control plane",
                    f"KDS service {self.global_namespace}/{GLOBAL_SYNC_SERVICE} ({KDS_PORT}) has "
                    f"a LoadBalancer address",
                ),
                lambda cluster: cluster.wait_load_balancer(
                    self.global_namespace, GLOBAL_SYNC_SERVICE, timeouts.load_balancer
                ),
                f"poll v1 Service {self.global_namespace}/{GLOBAL_SYNC_SERVICE} "
                f".status.loadBalancer.ingress[0], up to {timeouts.load_balancer:g}s",
                record_as="kuma_global_kds_address",
            ),
        ]

        def delete_global(clusters: Clusters) -> dict[str, Any]:
            cluster = clusters[g]
            found = cluster.api.get("v1", "Namespace", self.global_namespace)
            if found is None:
                return {"kuma_global": "already gone"}
            deleted = 0
            # Deleted by name: the environment's Service fields make no difference here.
            for obj in reversed(self._render_global(clusters, version, NO_POLICY)):
                metadata = obj["metadata"]
                if cluster.delete(
                    obj["apiVersion"], obj["kind"], metadata["name"], metadata["namespace"]
                ):
                    deleted += 1
            return {"kuma_global_objects_deleted": deleted}

        global_part.uninstall.append(
            call_op(
                uninstall,
                g,
                "api",
                step_text(
                    "global control plane",
                    "delete what the same rendering created (reverse order)",
                ),
                delete_global,
                self._global_render_detail(
                    version,
                    "DELETE each rendered object, last first (already gone is fine)",
                    NO_POLICY,
                ),
            )
        )
        if store.store == "postgres":
            global_part.uninstall.append(
                delete_op(
                    uninstall,
                    g,
                    "v1",
                    "Secret",
                    POSTGRES_SECRET,
                    self.global_namespace,
                    None,
                    step_text(
                        "global control plane",
                        f"delete Secret {self.global_namespace}/{POSTGRES_SECRET}",
                    ),
                )
            )
        global_part.uninstall.append(
            delete_op(
                uninstall,
                g,
                "v1",
                "Namespace",
                self.global_namespace,
                None,
                timeouts.namespace_deletion,
                step_text(
                    "global control plane",
                    f"delete namespace {self.global_namespace} and wait until it is gone (its "
                    f"load balancer with it)",
                ),
            )
        )

        # -- Mesh default with mTLS
        mesh_part = Component("mesh")
        calls: list[tuple[str, str, Mapping[str, Any] | None]] = []
        undo: list[tuple[str, str, Mapping[str, Any] | None]] = []
        if needs_traffic_permission(version):
            # Before mTLS: without it, mTLS denies all traffic from 2.6 on.
            calls.append(
                (
                    "PUT",
                    f"/meshes/{MESH}/meshtrafficpermissions/{ALLOW_ALL}",
                    allow_all_permission(),
                )
            )
        calls.append(("PUT", f"/meshes/{MESH}", mesh_resource(mtls=True)))
        undo.append(("PUT", f"/meshes/{MESH}", mesh_resource(mtls=False)))
        if needs_traffic_permission(version):
            undo.append(("DELETE", f"/meshes/{MESH}/meshtrafficpermissions/{ALLOW_ALL}", None))
        mesh_part.install.append(
            self._api_op(
                install,
                step_text(
                    "mesh",
                    f"Mesh {MESH} with builtin-CA mTLS ({CA_BACKEND})"
                    + (
                        " and a MeshTrafficPermission allowing all"
                        if needs_traffic_permission(version)
                        else ""
                    ),
                ),
                calls,
            )
        )
        mesh_part.uninstall.append(
            self._api_op(
                uninstall,
                step_text("mesh", f"Mesh {MESH} back without mTLS (matters with a Postgres store)"),
                undo,
                teardown=True,
            )
        )

        # -- zone control planes
        zones_part = Component("zone control planes")
        for role in ROLES:
            zones_part.install.append(
                apply_op(
                    install,
                    role,
                    [
                        namespace_manifest(
                            ZONE_NAMESPACE, {**managed_labels(ctx), INJECTION_LABEL: "disabled"}
                        )
                    ],
                    step_text(
                        "zone control planes",
                        f"namespace {ZONE_NAMESPACE} ({INJECTION_LABEL}=disabled, required "
                        "from 2.11)",
                    ),
                )
            )

            ingress_load_balancer = self.load_balancer_policy(ctx, role)
            values = self.zone_values(ingress_load_balancer)
            patched = not ingress_load_balancer.is_empty

            def install_zone(
                clusters: Clusters,
                role: str = role,
                values: dict[str, Any] = values,
                patched: bool = patched,
            ) -> dict[str, Any]:
                state = load_balancer_state(
                    clusters[g].api, self.global_namespace, GLOBAL_SYNC_SERVICE
                )
                if not state.ready:
                    raise StepFailed("; ".join(state.pending))
                with tempfile.TemporaryDirectory(prefix="meshbench-") as folder:
                    values_file = None
                    if values:
                        values_file = str(Path(folder) / "zone-values.yaml")
                        Path(values_file).write_text(render([values]), encoding="utf-8")
                    clusters[role].run(
                        "helm",
                        self.zone_install_args(
                            version, role, str(state.value), values_file, wait=not patched
                        ),
                        timeout=timeouts.command + timeouts.rollout,
                    )
                return {f"kuma_zone_{role}": self.zone(role)}

            detail = format_command(
                [
                    "helm",
                    *self.zone_install_args(
                        version,
                        role,
                        "<global KDS address>",
                        "<tmp>/zone-values.yaml" if values else None,
                        wait=not patched,
                    ),
                ]
            )
            if values:
                detail += "\n# <tmp>/zone-values.yaml\n" + render([values])
            zones_part.install.append(
                call_op(
                    install,
                    role,
                    "command",
                    step_text(
                        "zone control planes",
                        f"zone {self.zone(role)} with zone ingress, connected to the global's KDS",
                    ),
                    install_zone,
                    detail,
                )
            )
            if patched:
                zones_part.install.append(
                    policy_patch_op(
                        install,
                        role,
                        ZONE_NAMESPACE,
                        INGRESS,
                        ingress_load_balancer,
                        step_text(
                            "zone control planes",
                            f"Service {ZONE_NAMESPACE}/{INGRESS} gets the environment's "
                            f"load-balancer settings right after helm created it (the chart has "
                            f"no value for source ranges)",
                        ),
                    )
                )
        for role in ROLES:
            zones_part.uninstall += [
                cli_op(
                    uninstall,
                    role,
                    step_text("zone control planes", f"helm uninstall zone {self.zone(role)}"),
                    "helm",
                    ["uninstall", RELEASE, "--namespace", ZONE_NAMESPACE, "--wait"],
                    timeouts.command,
                    gone_if=("not found",),
                ),
                delete_crds_op(
                    uninstall,
                    role,
                    "zone control planes",
                    "kuma.io",
                    lambda cluster, k=key: inventory.before_names(cluster, ctx, k, "crds"),
                ),
                delete_op(
                    uninstall,
                    role,
                    "v1",
                    "Namespace",
                    ZONE_NAMESPACE,
                    None,
                    timeouts.namespace_deletion,
                    step_text(
                        "zone control planes",
                        f"delete namespace {ZONE_NAMESPACE} and wait until it is gone",
                    ),
                ),
            ]
        zones_part.uninstall.append(self._delete_zones_op(uninstall))
        return [inventory_part, global_part, mesh_part, zones_part]

    def _delete_zones_op(self, step_phase: str) -> Op:
        """Zones stay on the global after their control planes are gone; deleting one is
        refused while it still counts as connected, so retry until accepted."""
        role = self.global_role

        def action(clusters: Clusters) -> dict[str, Any]:
            if not self._global_exists(clusters[role]):
                return {"kuma_zones": "global already gone"}
            with self.global_api(clusters) as api:
                for zone in self.zones:

                    def attempt(zone: str = zone) -> Readiness:
                        try:
                            api.delete(f"/zones/{zone}")
                        except StepFailed as exc:
                            return Readiness(False, (str(exc),))
                        return Readiness(True)

                    wait_for(
                        attempt,
                        what=f"{role} cluster: zone {zone} deleted from the global",
                        timeout=self.timeouts.namespace_deletion,
                        interval=self.api_poll_interval,
                    )
            return {"kuma_zones_deleted": self.zones}

        return call_op(
            step_phase,
            role,
            "http",
            step_text(
                "zone control planes", f"delete zones {', '.join(self.zones)} from the global"
            ),
            action,
            "\n".join(f"DELETE /zones/{zone}" for zone in self.zones)
            + "\nretried while the global still counts a zone as connected",
        )

    # ------------------------------------------------------------------ readiness
    def ready_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        step_phase = phase(iteration, "wait_mesh_ready")
        timeouts = self.timeouts
        ops: list[Op] = []
        for role in ROLES:
            for deployment in (CONTROL_PLANE, INGRESS):
                ops.append(
                    wait_op(
                        step_phase,
                        role,
                        f"deployment {ZONE_NAMESPACE}/{deployment} rolled out",
                        lambda cluster, d=deployment: cluster.wait_rollout(
                            ZONE_NAMESPACE, d, timeouts.rollout
                        ),
                        f"poll apps/v1 Deployment {ZONE_NAMESPACE}/{deployment}, up to "
                        f"{timeouts.rollout:g}s",
                    )
                )
            ops.append(
                wait_op(
                    step_phase,
                    role,
                    f"service {ZONE_NAMESPACE}/{INGRESS} has a LoadBalancer address",
                    lambda cluster: cluster.wait_load_balancer(
                        ZONE_NAMESPACE, INGRESS, timeouts.load_balancer
                    ),
                    f"poll v1 Service {ZONE_NAMESPACE}/{INGRESS} .status.loadBalancer"
                    f".ingress[0], up to {timeouts.load_balancer:g}s",
                    record_as=f"zone_ingress_address_{role}",
                )
            )
        zones = self.zones
        ops += [
            self._api_wait_op(
                step_phase,
                f"zones {', '.join(zones)} are Online in the global control plane",
                "/zones+insights",
                lambda document: zones_state(document, zones),
                "kuma_zones_online",
                "each zone enabled with a KDS subscription connected and not disconnected "
                "(what `kumactl inspect zones` shows as Online)",
            ),
            self._api_wait_op(
                step_phase,
                "each zone's ingress is Online and advertises an address",
                "/zoneingresses+insights",
                lambda document: zone_ingresses_state(document, zones),
                "kuma_zone_ingresses",
                "per zone an ingress Online with networking.advertisedAddress set",
            ),
            self._api_wait_op(
                step_phase,
                f"Mesh {MESH} has mTLS backend {CA_BACKEND} enabled",
                f"/meshes/{MESH}",
                lambda mesh: (
                    Readiness(True, (), CA_BACKEND)
                    if (mesh.get("mtls") or {}).get("enabledBackend") == CA_BACKEND
                    else Readiness(False, (f"Mesh {MESH} mTLS: {mesh.get('mtls')}",))
                ),
                "kuma_mtls_backend",
                f"mtls.enabledBackend == {CA_BACKEND}",
            ),
        ]
        return ops

    # ------------------------------------------------------------------ workloads
    def workload_profile(self, ctx: RunContext) -> WorkloadProfile:
        return WorkloadProfile(
            namespace_labels={INJECTION_LABEL: "enabled"},
            # Without it Kuma treats the port as TCP: the study measured Kuma at L4.
            service_app_protocol="http",
            service_type="ClusterIP",
            protocol="http",
            path=(
                "fortio -> client sidecar (Envoy, L7 HTTP) -> server zone's ingress "
                "(LoadBalancer, SNI passthrough of mTLS) -> server sidecar -> nginx"
            ),
            crosses_load_balancer=True,
            extra_sample_scopes=(SampleScope("server", ZONE_NAMESPACE, f"app={INGRESS}"),),
        )

    def target_url(self, ctx: RunContext, clusters: Clusters) -> str:
        return f"http://{service_name(ctx.resource_prefix)}.mesh:80/"

    def describe_target(self, ctx: RunContext) -> str:
        # Kuma DNS: <kuma.io/service>.mesh resolves to a VIP on serviceVipPort 80.
        return f"http://{service_name(ctx.resource_prefix)}.mesh:80/ (Kuma DNS)"

    # ------------------------------------------------------------------ pair / records
    def cleanup_pair_ops(self, ctx: RunContext) -> list[Op]:
        return [inventory.remove_op("delete_clusters", role, ctx) for role in ROLES]

    def warnings(self, ctx: RunContext) -> list[str]:
        found = [support_check(self.config, ctx, self.name).warning()]
        store = self.settings.global_control_plane
        if store.store == "memory":
            found.append(
                f"Kuma's global control plane runs next to zone {self.zone(self.global_role)} "
                f"in the {self.global_role} cluster with an in-memory store (the study's "
                f"placement): the Kuma docs want a dedicated cluster or Postgres, and a restart "
                f"of the global loses the Mesh and zone state mid-run"
            )
        return [warning for warning in found if warning]

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        store = self.settings.global_control_plane
        version = ctx.mesh_version or ""
        return {
            "mesh": self.name,
            "mesh_version": ctx.mesh_version,
            "version_profile": self.config.version_profile_name_for(ctx.environment),
            "kubernetes_support": support_check(self.config, ctx, self.name).record(),
            "topology": "multi-zone without egress",
            "zones": self.settings.zone_names.model_dump(),
            "global_control_plane": {
                "cluster": store.cluster,
                "namespace": store.namespace,
                "store": store.store,
                "mode": "universal on Kubernetes",
                "co_located_with_zone": self.zone(store.cluster),
            },
            "mtls": f"builtin CA backend {CA_BACKEND}",
            "traffic_permission": "MeshTrafficPermission allow-all"
            if version and needs_traffic_permission(version)
            else "TrafficPermission allow-all-default (created with the Mesh)",
            "proxy_resources": resources_record(self.config.kubernetes.proxy_resources),
            "ingress_resources": resources_record(self.config.kubernetes.proxy_resources),
        }


def build_installer(config: BenchmarkConfig) -> KumaInstaller:
    return KumaInstaller(config)
