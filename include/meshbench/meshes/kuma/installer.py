"""The Kuma installer: names, helm values, the global's API, readiness and records."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from meshbench.backend import RunContext, StepFailed
from meshbench.config import BenchmarkConfig, KumaMesh
from meshbench.cost import CONTROL_PLANE as CONTROL_PLANE_ROLE
from meshbench.cost import GATEWAY
from meshbench.kube.cluster import Clusters, KubeCluster
from meshbench.kube.load_balancers import LoadBalancerPolicy
from meshbench.kube.metrics import SampleScope
from meshbench.kube.ops import Op, call_op, wait_op
from meshbench.kube.redact import format_command
from meshbench.kube.waits import Readiness, wait_for
from meshbench.meshes import inventory
from meshbench.meshes.common import (
    ROLES,
    ComponentMeshInstaller,
    managed_labels,
    phase,
    render,
    resources_record,
    step_text,
    support_check,
)
from meshbench.meshes.kuma.components import COMPONENT_BUILDERS
from meshbench.meshes.kuma.resources import (
    API_PORT,
    CA_BACKEND,
    CONTROL_PLANE,
    GLOBAL_SYNC_SERVICE,
    INGRESS,
    INJECTION_LABEL,
    KDS_PORT,
    MESH,
    POSTGRES_SECRET,
    RELEASE,
    ZONE_NAMESPACE,
    KumaApi,
    filter_global_objects,
    needs_traffic_permission,
    service_name,
    zone_ingresses_state,
    zones_state,
)
from meshbench.workloads.kubernetes import WorkloadProfile


class KumaInstaller(ComponentMeshInstaller):
    name = "kuma"
    display_name = "Kuma"
    component_builders = COMPONENT_BUILDERS
    api_poll_interval = 5.0
    # Teardown deletes by name (the global's objects too: see delete_global).
    uninstall_uses_load_balancer_policy = False

    def __init__(self, config: BenchmarkConfig) -> None:
        super().__init__(config)
        self.settings: KumaMesh = config.meshes.kuma

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
            extra_sample_scopes=(SampleScope("server", ZONE_NAMESPACE, f"app={INGRESS}", GATEWAY),),
            # Each zone's control plane, and the global one where it runs.
            control_plane_scopes=tuple(
                SampleScope(role, namespace, f"app={CONTROL_PLANE}", CONTROL_PLANE_ROLE)
                for role in ROLES
                for namespace in dict.fromkeys(
                    [ZONE_NAMESPACE] + ([self.global_namespace] if role == self.global_role else [])
                )
            ),
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
