"""Cross-cluster DNS for NSM interdomain, and undoing it.

NSM's interdomain recipe (mesh-recipes.md section 3.3) exposes each cluster's kube-dns as
a LoadBalancer, makes CoreDNS answer ``<svc>.<ns>.my.<self>`` with the external address
of LoadBalancer Services (``k8s_external``) and forward ``my.<peer>`` to the peer's
exposed DNS. Upstream overwrites the whole Corefile and never restores it; here the
original is kept in a ConfigMap of its own before the first change, the change is an
edit of the cluster's own Corefile (so provider-specific settings survive), and cleanup
puts the original back.
"""

from __future__ import annotations

import re
from typing import Any

from meshbench.backend import StepFailed

COREDNS_NAMESPACE = "kube-system"
COREDNS_CONFIGMAP = "coredns"
COREFILE_KEY = "Corefile"
MARKER = "# meshbench interdomain"
_ROOT_BLOCK = re.compile(r"(?m)^(\.:53\s*\{[^\n]*\n)")


def domain(cluster: str) -> str:
    """The DNS zone another cluster uses to reach this one's LoadBalancer Services."""
    return f"my.{cluster}"


def interdomain_corefile(original: str, own_cluster: str, peer_cluster: str, peer_ip: str) -> str:
    """``original`` with ``k8s_external my.<own>`` in the root server block and a server
    block forwarding ``my.<peer>`` to ``peer_ip`` over TCP. Editing an already edited
    Corefile is refused (the original must be the one saved)."""
    if MARKER in original:
        raise StepFailed("the CoreDNS Corefile already carries meshbench's interdomain changes")
    if not _ROOT_BLOCK.search(original):
        raise StepFailed("the CoreDNS Corefile has no '.:53 {' server block to extend")
    address = f"[{peer_ip}]" if ":" in peer_ip else peer_ip
    edited = _ROOT_BLOCK.sub(
        lambda m: f"{m.group(1)}    k8s_external {domain(own_cluster)}  {MARKER}\n", original, 1
    )
    stanza = (
        f"{domain(peer_cluster)}:53 {{  {MARKER}\n"
        f"    forward . {address}:53 {{\n"
        f"        force_tcp\n"
        f"    }}\n"
        f"}}\n"
    )
    return edited.rstrip("\n") + "\n" + stanza


def corefile_of(config_map: dict[str, Any] | None) -> str:
    if config_map is None:
        raise StepFailed(f"ConfigMap {COREDNS_NAMESPACE}/{COREDNS_CONFIGMAP} does not exist")
    text = (config_map.get("data") or {}).get(COREFILE_KEY)
    if not text:
        raise StepFailed(f"ConfigMap {COREDNS_NAMESPACE}/{COREDNS_CONFIGMAP} has no Corefile")
    return str(text)


def coredns_config_map(corefile: str) -> dict[str, Any]:
    """Only the field meshbench changes: server-side apply takes ownership of the Corefile
    and nothing else."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": COREDNS_CONFIGMAP, "namespace": COREDNS_NAMESPACE},
        "data": {COREFILE_KEY: corefile},
    }
