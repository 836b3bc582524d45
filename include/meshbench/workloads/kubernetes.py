"""nginx and Fortio as Kubernetes manifests, shaped by what the mesh asks for.

Traffic always flows the same way, whatever the mesh: Fortio in the *client* cluster sends
to nginx in the *server* cluster. Both workloads get the same, recorded requests and limits
from the configuration; the mesh contributes only labels and annotations (injection, NSM's
network-service annotation), the Service's protocol and type, and whether the Service must
exist in the client cluster too (Istio's multi-cluster discovery).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from meshbench.config import ContainerResources, KubernetesSettings
from meshbench.kube.metrics import SampleScope
from meshbench.local.nginx import KEEPALIVE_REQUESTS, render_config

NGINX = "nginx"
FORTIO = "fortio"
NGINX_PORT = 80
FORTIO_REST_PORT = 8080
NGINX_CONF_MAP = "nginx-conf"
NGINX_RUN_DIR = "/var/run/meshbench-nginx"
NGINX_STATUS_PORT = 8081  # stub_status, inside the pod only (connection counters)
FORTIO_DATA_DIR = "/var/lib/fortio"

RUN_LABEL = "meshbench.io/run"
ITERATION_LABEL = "meshbench.io/iteration"
ROLE_LABEL = "meshbench.io/role"
CONFIG_HASH_ANNOTATION = "meshbench.io/config-hash"
COMMON_LABELS = {
    "app.kubernetes.io/part-of": "meshbench",
    "app.kubernetes.io/managed-by": "meshbench",
}


@dataclass(frozen=True)
class WorkloadProfile:
    """What a mesh installer supplies for the workloads (filled in by each mesh).

    ``protocol`` is what the mesh's data plane handles ("http" for L7 proxies, "tcp" for L4,
    "ip" for an L3 tunnel), ``path`` the hops a request takes, and
    ``crosses_load_balancer`` whether that path goes through a LoadBalancer Service's
    external address (a cloud load balancer on AWS, MetalLB on bare metal; the environment
    records which): all three are recorded with every measurement so unlike set-ups are visible.
    """

    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    server_pod_annotations: Mapping[str, str] = field(default_factory=dict)
    client_pod_annotations: Mapping[str, str] = field(default_factory=dict)
    service_annotations: Mapping[str, str] = field(default_factory=dict)
    service_app_protocol: str | None = None
    service_type: Literal["ClusterIP", "LoadBalancer"] = "ClusterIP"
    service_in_client_cluster: bool = False
    protocol: Literal["http", "tcp", "ip"] = "http"
    path: str = ""
    crosses_load_balancer: bool = False
    # Containers on the path beyond the workload namespace (gateways, forwarders, ...).
    extra_sample_scopes: tuple[SampleScope, ...] = ()
    # The mesh's control plane: counted in each run's cost, not judged against CPU limits.
    control_plane_scopes: tuple[SampleScope, ...] = ()
    # Roles of injected containers that are no per-request proxy (container -> role).
    container_roles: tuple[tuple[str, str], ...] = ()

    def record(self) -> dict[str, Any]:
        """The like-for-like settings stored with each run."""
        return {
            "protocol": self.protocol,
            "path": self.path,
            "crosses_load_balancer": self.crosses_load_balancer,
            "service_type": self.service_type,
            "service_app_protocol": self.service_app_protocol,
            "namespace_labels": dict(self.namespace_labels),
            "server_pod_annotations": dict(self.server_pod_annotations),
            "client_pod_annotations": dict(self.client_pod_annotations),
        }


# The no-mesh path: nginx behind a LoadBalancer Service, no proxies (the baseline mesh, and
# the paired baseline run before each mesh run).
NO_MESH_PROFILE = WorkloadProfile(
    service_type="LoadBalancer",
    protocol="http",
    path="fortio -> server cluster's LoadBalancer -> kube-proxy -> nginx (no proxies)",
    # A cloud LB on AWS, MetalLB on bare metal: the environment records which.
    crosses_load_balancer=True,
)
PAIRED_BASELINE_SUFFIX = "-nomesh"


def paired_baseline_namespace(namespace: str) -> str:
    """Where a paired baseline's nginx and Fortio run, beside the mesh's ``namespace`` in the
    same two clusters: no injection labels, no NSM annotations, so no mesh on the path."""
    return f"{namespace}{PAIRED_BASELINE_SUFFIX}"


@dataclass(frozen=True)
class WorkloadManifests:
    namespace: str
    server: list[dict[str, Any]]  # apply order: Namespace, ConfigMap, Deployment, Service
    client: list[dict[str, Any]]  # apply order: Namespace, [Service], Deployment


def resources(spec: ContainerResources) -> dict[str, Any]:
    return {
        "requests": {"cpu": spec.cpu_request, "memory": spec.memory_request},
        "limits": {"cpu": spec.cpu_limit, "memory": spec.memory_limit},
    }


def _labels(run_slug: str, role: str, extra: Mapping[str, str] = {}) -> dict[str, str]:
    return {**COMMON_LABELS, RUN_LABEL: run_slug, ROLE_LABEL: role, **extra}


def namespace_manifest(
    namespace: str, run_slug: str, role: str, mesh_labels: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": _labels(run_slug, role, mesh_labels)},
    }


def nginx_conf() -> str:
    """The local environment's nginx.conf, byte for byte the same settings: one connection
    for the whole run, no access log, the same 615-byte body. Its run folder is an
    emptyDir in the pod (pid, error log, temporary files)."""
    return render_config(Path(NGINX_RUN_DIR), f"{NGINX_PORT}", f"127.0.0.1:{NGINX_STATUS_PORT}")


def _pod_spec_extras(node_selector: Mapping[str, str] | None) -> dict[str, Any]:
    return {"nodeSelector": dict(node_selector)} if node_selector else {}


def nginx_service(
    namespace: str,
    run_slug: str,
    role: str,
    service_type: str,
    annotations: Mapping[str, str],
    app_protocol: str | None,
    source_ranges: Sequence[str] = (),
) -> dict[str, Any]:
    port: dict[str, Any] = {
        "name": "http",
        "port": NGINX_PORT,
        "targetPort": NGINX_PORT,
        "protocol": "TCP",
    }
    if app_protocol:
        port["appProtocol"] = app_protocol
    metadata: dict[str, Any] = {
        "name": NGINX,
        "namespace": namespace,
        "labels": _labels(run_slug, role, {"app": NGINX}),
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: dict[str, Any] = {"type": service_type, "selector": {"app": NGINX}, "ports": [port]}
    if service_type == "LoadBalancer" and source_ranges:
        spec["loadBalancerSourceRanges"] = list(source_ranges)
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def nginx_container(settings: KubernetesSettings) -> dict[str, Any]:
    return {
        "name": NGINX,
        "image": settings.nginx.image,
        # The configuration says "daemon off" itself; the image's default command would
        # repeat it (a duplicate directive).
        "command": ["nginx", "-c", "/etc/nginx/nginx.conf"],
        "ports": [{"name": "http", "containerPort": NGINX_PORT, "protocol": "TCP"}],
        "resources": resources(settings.nginx.resources),
        "readinessProbe": {"httpGet": {"path": "/", "port": NGINX_PORT}, "periodSeconds": 5},
        "volumeMounts": [
            {
                "name": "conf",
                "mountPath": "/etc/nginx/nginx.conf",
                "subPath": "nginx.conf",
                "readOnly": True,
            },
            {"name": "run", "mountPath": NGINX_RUN_DIR},
            # nginx makes its temporary folders inside this one but not the folder itself.
            {"name": "temp", "mountPath": f"{NGINX_RUN_DIR}/nginx-temp"},
        ],
    }


def fortio_container(settings: KubernetesSettings) -> dict[str, Any]:
    return {
        "name": FORTIO,
        "image": settings.fortio.image,
        # Server mode: REST API on 8080; results saved in data-dir so /fortio/data/<id>.json
        # serves them.
        "args": ["server", "-data-dir", FORTIO_DATA_DIR],
        "ports": [{"name": "http-rest", "containerPort": FORTIO_REST_PORT, "protocol": "TCP"}],
        "resources": resources(settings.fortio.resources),
        "readinessProbe": {
            "httpGet": {"path": "/fortio/rest/status", "port": FORTIO_REST_PORT},
            "periodSeconds": 5,
        },
        "volumeMounts": [{"name": "results", "mountPath": FORTIO_DATA_DIR}],
    }


@dataclass(frozen=True)
class RunWorkloads:
    """The workloads of one run in one namespace of both clusters, one manifest each."""

    namespace: str
    run_slug: str
    settings: KubernetesSettings
    profile: WorkloadProfile
    node_selector: Mapping[str, str] | None = None

    def namespace_manifest(self, role: str) -> dict[str, Any]:
        return namespace_manifest(
            self.namespace, self.run_slug, role, self.profile.namespace_labels
        )

    def nginx_conf_map(self, conf: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": NGINX_CONF_MAP,
                "namespace": self.namespace,
                "labels": _labels(self.run_slug, "server"),
            },
            "data": {"nginx.conf": conf},
        }

    def _deployment(
        self,
        app: str,
        role: str,
        pod_annotations: Mapping[str, str],
        container: dict[str, Any],
        volumes: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """One replica of ``app``; its pods wear the mesh's labels besides meshbench's."""
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": app,
                "namespace": self.namespace,
                "labels": _labels(self.run_slug, role, {"app": app}),
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {
                        "labels": _labels(
                            self.run_slug, role, {"app": app, **self.profile.pod_labels}
                        ),
                        "annotations": dict(pod_annotations),
                    },
                    "spec": {
                        **_pod_spec_extras(self.node_selector),
                        "containers": [container],
                        "volumes": volumes,
                    },
                },
            },
        }

    def nginx_deployment(self, conf_hash: str) -> dict[str, Any]:
        """nginx in the server cluster; ``conf_hash`` in its pod template makes a changed
        configuration roll the pod."""
        annotations = {CONFIG_HASH_ANNOTATION: conf_hash, **self.profile.server_pod_annotations}
        volumes = [
            {"name": "conf", "configMap": {"name": NGINX_CONF_MAP}},
            {"name": "run", "emptyDir": {}},
            {"name": "temp", "emptyDir": {}},
        ]
        return self._deployment(
            NGINX, "server", annotations, nginx_container(self.settings), volumes
        )

    def fortio_deployment(self) -> dict[str, Any]:
        """Fortio in the client cluster, waiting for the REST calls that start each run."""
        volumes = [{"name": "results", "emptyDir": {}}]
        return self._deployment(
            FORTIO,
            "client",
            self.profile.client_pod_annotations,
            fortio_container(self.settings),
            volumes,
        )

    def server_service(
        self,
        environment_service_annotations: Mapping[str, str] | None,
        load_balancer_source_ranges: Sequence[str],
    ) -> dict[str, Any]:
        """The Service in front of nginx, of the type the mesh asks for."""
        # The environment's annotations concern load balancers (AWS: internet-facing), so
        # they apply only to a LoadBalancer Service; the mesh's apply always.
        profile = self.profile
        annotations = {
            **(
                (environment_service_annotations or {})
                if profile.service_type == "LoadBalancer"
                else {}
            ),
            **profile.service_annotations,
        }
        return nginx_service(
            self.namespace,
            self.run_slug,
            "server",
            profile.service_type,
            annotations,
            profile.service_app_protocol,
            load_balancer_source_ranges,
        )

    def client_side_service(self) -> dict[str, Any]:
        """nginx's Service again in the client cluster, for meshes whose discovery needs it:
        same name and namespace, no endpoints here; the mesh routes to the server cluster."""
        return nginx_service(
            self.namespace,
            self.run_slug,
            "client",
            "ClusterIP",
            self.profile.service_annotations,
            self.profile.service_app_protocol,
        )


def render_workloads(
    namespace: str,
    run_slug: str,
    settings: KubernetesSettings,
    profile: WorkloadProfile,
    *,
    node_selector: Mapping[str, str] | None = None,
    environment_service_annotations: Mapping[str, str] | None = None,
    load_balancer_source_ranges: Sequence[str] = (),
) -> WorkloadManifests:
    """Every manifest of one run's workloads, in apply order per cluster."""
    workloads = RunWorkloads(namespace, run_slug, settings, profile, node_selector)
    conf = nginx_conf()
    conf_hash = hashlib.sha256(conf.encode()).hexdigest()[:16]
    server = [
        workloads.namespace_manifest("server"),
        workloads.nginx_conf_map(conf),
        workloads.nginx_deployment(conf_hash),
        workloads.server_service(environment_service_annotations, load_balancer_source_ranges),
    ]
    client = [workloads.namespace_manifest("client")]
    if profile.service_in_client_cluster:
        client.append(workloads.client_side_service())
    client.append(workloads.fortio_deployment())
    return WorkloadManifests(namespace, server, client)


def workload_record(settings: KubernetesSettings) -> dict[str, Any]:
    """Images, requests/limits and nginx settings, stored with each run."""
    return {
        "nginx_image": settings.nginx.image,
        "fortio_image": settings.fortio.image,
        "nginx_resources": resources(settings.nginx.resources),
        "fortio_resources": resources(settings.fortio.resources),
        "nginx_keepalive_requests": KEEPALIVE_REQUESTS,
        "nginx_conf": "meshbench.local.nginx.render_config (the local environment's)",
        "direction": "fortio (client cluster) -> nginx (server cluster)",
    }
