"""Istio multi-primary on different networks, installed and removed once per iteration.

Facts and sources: mesh-recipes.md section 1 (istio.io multi-primary multi-network guide,
its verification and troubleshooting pages, istio/istio at 1.19.3 and 1.28.0). Per
iteration, in both clusters:

1. ``istio-system`` labelled with the cluster's network (before istiod starts);
2. the plug-in CA: Secret ``cacerts`` from a root shared by both clusters and one
   intermediate per cluster, generated here (``meshes.pki``) before istiod starts;
3. the control plane: ``istioctl install`` with mesh id, cluster name and network;
4. the east-west gateway (an IstioOperator written here from the documented fields of
   ``gen-eastwest-gateway.sh``), a LoadBalancer Service carrying the environment's
   load-balancer settings through the overlay's ``k8s`` fields;
5. ``Gateway cross-network-gateway``: port 15443, TLS ``AUTO_PASSTHROUGH``, hosts ``*.local``;
6. remote secrets in both directions, each named after the cluster it describes: the study
   named both ``cluster2``, and istiod silently ignores a secret carrying its own cluster id,
   so one side never discovered the other.

Readiness: istiod and the gateway rolled out, the gateway has an address, each istiod
lists the other cluster as ``synced``; after the workloads: the Fortio sidecar's endpoints
for nginx are the server cluster's east-west gateway on 15443 (not raw pod IPs, not
nothing), and the backend's probe returns 200.
"""

from __future__ import annotations

from meshbench.meshes.istio.installer import IstioInstaller, build_installer
from meshbench.meshes.istio.resources import (
    CROSS_NETWORK_GATEWAY,
    CROSS_NETWORK_PORT,
    EASTWEST,
    ISTIO_NAMESPACE,
    ISTIOCTL,
    ISTIOD,
    NETWORK_LABEL,
    REMOTE_SECRET_LABEL,
    gateway_service_settings,
    parse_client_version,
    remote_clusters_state,
    remote_endpoint_state,
    remote_secret_name,
)

__all__ = [
    "CROSS_NETWORK_GATEWAY",
    "CROSS_NETWORK_PORT",
    "EASTWEST",
    "ISTIOCTL",
    "ISTIOD",
    "ISTIO_NAMESPACE",
    "NETWORK_LABEL",
    "REMOTE_SECRET_LABEL",
    "IstioInstaller",
    "build_installer",
    "gateway_service_settings",
    "parse_client_version",
    "remote_clusters_state",
    "remote_endpoint_state",
    "remote_secret_name",
]
