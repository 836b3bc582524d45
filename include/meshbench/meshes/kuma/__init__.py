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

from meshbench.meshes.kuma.installer import KumaInstaller, build_installer
from meshbench.meshes.kuma.resources import (
    CONTROL_PLANE,
    GLOBAL_SYNC_SERVICE,
    INGRESS,
    MESH,
    ZONE_NAMESPACE,
    KumaApi,
    allow_all_permission,
    filter_global_objects,
    mesh_resource,
    needs_traffic_permission,
    zone_ingresses_state,
    zones_state,
)

__all__ = [
    "CONTROL_PLANE",
    "GLOBAL_SYNC_SERVICE",
    "INGRESS",
    "MESH",
    "ZONE_NAMESPACE",
    "KumaApi",
    "KumaInstaller",
    "allow_all_permission",
    "build_installer",
    "filter_global_objects",
    "mesh_resource",
    "needs_traffic_permission",
    "zone_ingresses_state",
    "zones_state",
]
