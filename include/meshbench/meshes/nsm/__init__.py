"""Network Service Mesh interdomain vl3.

Facts and sources: mesh-recipes.md section 3 (networkservicemesh/deployments-k8s at
v1.11.1 and v1.18.0, sdk and sdk-vpp at v1.11.1). Upstream's READMEs are the recipe; the
manifests are applied from upstream at the pinned tag (``apps/...?ref=vX.Y.Z``) through
kustomizations written here, which add this run's patches: nothing is copied.

Once per cluster pair (prepare_pair, undone in delete_clusters):

1. interdomain DNS: kube-dns exposed as a LoadBalancer; CoreDNS answers ``my.<self>``
   with LoadBalancer addresses and forwards ``my.<peer>`` to the peer's exposed DNS. The
   original Corefile is kept first and restored on cleanup (upstream never restores it);
2. SPIRE in each cluster (upstream ``examples/spire/cluster1|2``: trust domains
   ``nsm.cluster1``/``nsm.cluster2``), with the ClusterSPIFFEIDs for NSM's workloads;
3. SPIFFE federation: each SPIRE server gets the other's trust bundle.

Per iteration (install_mesh, undone in uninstall_mesh): NSM's interdomain deployment in
``nsm-system`` at the configured version (nsmgr, forwarder-vpp, registry-k8s,
registry-proxy-dns, nsmgr-proxy, admission webhook; registry and nsmgr-proxy exposed), and
in the server cluster the vl3 network: NetworkService ``my-vl3-network`` (payload IP),
``nse-vl3-vpp`` and ``vl3-ipam`` with DNS names from the ``dnsName`` label. Workloads join
by the ``networkservicemesh.io`` annotation; the client's names the server's domain.

Every LoadBalancer Service (exposed DNS, spire-server, nsmgr-proxy, registry) gets the
environment's load-balancer settings: in our manifest, in the NSM kustomization, or for
upstream's SPIRE by a patch right after ``kubectl apply -k``.

vl3 carries IP payload, so the forwarders pick WireGuard between nodes; ``ipsec`` puts
``NSM_MECHANISM_PRIORITY=ipsec`` on the forwarders. Every NSM pod must be ready: a wait
that times out fails the iteration (the study ignored its failed waits).
"""

from __future__ import annotations

from meshbench.meshes.nsm.dns import pinned_forward_address, resolution_state, resolve_ipv4
from meshbench.meshes.nsm.installer import NsmInstaller, build_installer
from meshbench.meshes.nsm.resources import (
    EXPOSED_DNS,
    NSM_CLUSTER,
    NSM_NAMESPACE,
    SPIRE_NAMESPACE,
    VL3_NAMESPACE,
    client_annotation,
    git_ref,
    pods_all_ready,
    trust_domain,
)

__all__ = [
    "EXPOSED_DNS",
    "NSM_CLUSTER",
    "NSM_NAMESPACE",
    "SPIRE_NAMESPACE",
    "VL3_NAMESPACE",
    "NsmInstaller",
    "build_installer",
    "client_annotation",
    "git_ref",
    "pinned_forward_address",
    "pods_all_ready",
    "resolution_state",
    "resolve_ipv4",
    "trust_domain",
]
