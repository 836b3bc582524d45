"""Interdomain DNS for NSM: each cluster's kube-dns exposed as a LoadBalancer, CoreDNS
edited to answer ``my.<self>`` and forward ``my.<peer>`` to the peer's exposed DNS (the
original Corefile kept and restored), the peer's address resolved and kept current, and a
probe that the edited Corefile is live."""

from __future__ import annotations

import re
import shlex
import socket
from typing import TYPE_CHECKING, Any

from meshbench.backend import RunContext, StepFailed
from meshbench.kube.cluster import Clusters, KubeCluster
from meshbench.kube.load_balancers import LoadBalancerPolicy
from meshbench.kube.ops import Op, call_op
from meshbench.kube.redact import format_command
from meshbench.kube.waits import Readiness, load_balancer_state, wait_for
from meshbench.meshes import coredns
from meshbench.meshes.common import managed_labels, other, render, step_text
from meshbench.meshes.nsm.resources import DNS_PROBE_INTERVAL, EXPOSED_DNS, NSM_CLUSTER

if TYPE_CHECKING:
    from meshbench.meshes.nsm.installer import NsmInstaller


def resolution_state(address: str) -> Readiness:
    """CoreDNS ``forward`` takes addresses, not names: AWS load balancers have hostnames
    (upstream resolves them with dig), and a fresh ELB name takes minutes to resolve. The
    value is the IPv4 address (an address is its own)."""
    try:
        socket.inet_aton(address)
        return Readiness(True, value=address)
    except OSError:
        pass
    if ":" in address:
        return Readiness(True, value=address)
    try:
        found = socket.getaddrinfo(address, 53, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        return Readiness(False, (f"{address} does not resolve yet: {exc}",))
    return Readiness(True, value=str(found[0][4][0]))


def resolve_ipv4(address: str, timeout: float, interval: float = DNS_PROBE_INTERVAL) -> str:
    """``address`` as an IPv4 address, retried until it resolves or ``timeout`` passes."""
    return str(
        wait_for(
            lambda: resolution_state(address),
            what=f"the peer's DNS load balancer {address} resolves",
            timeout=timeout,
            interval=interval,
        )
    )


def pinned_forward_address(corefile: str, peer_cluster: str) -> str | None:
    """The address the edited Corefile forwards ``my.<peer>`` to (None if not edited)."""
    match = re.search(
        rf"(?m)^{re.escape(coredns.domain(peer_cluster))}:53 \{{.*\n\s*forward \. (\S+):53",
        corefile,
    )
    return match.group(1).strip("[]") if match else None


def corefile_and_kept(cluster: KubeCluster, saved: str) -> tuple[str, dict[str, Any] | None]:
    """The cluster's live Corefile, and the ConfigMap keeping its original (if any)."""
    current = coredns.corefile_of(
        cluster.api.get("v1", "ConfigMap", coredns.COREDNS_CONFIGMAP, coredns.COREDNS_NAMESPACE)
    )
    return current, cluster.api.get("v1", "ConfigMap", saved, coredns.COREDNS_NAMESPACE)


def probe_name(cluster: str) -> str:
    return f"{EXPOSED_DNS}.{coredns.COREDNS_NAMESPACE}.{coredns.domain(cluster)}"


def saved_corefile_name(ctx: RunContext) -> str:
    return f"{ctx.resource_prefix}-coredns-original"


def saved_corefile(ctx: RunContext, corefile: str) -> dict[str, Any]:
    """The ConfigMap keeping the cluster's original Corefile until cleanup restores it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": saved_corefile_name(ctx),
            "namespace": coredns.COREDNS_NAMESPACE,
            "labels": managed_labels(ctx),
        },
        "data": {coredns.COREFILE_KEY: corefile},
    }


def exposed_dns_service(
    ctx: RunContext, selector: dict[str, str], load_balancer: LoadBalancerPolicy
) -> dict[str, Any]:
    """kube-dns as a LoadBalancer the other cluster's CoreDNS forwards to."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": EXPOSED_DNS,
            "namespace": coredns.COREDNS_NAMESPACE,
            "labels": managed_labels(ctx),
        },
        "spec": {
            "type": "LoadBalancer",
            "selector": dict(selector),
            "ports": [{"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"}],
        },
    }
    return load_balancer.apply_to(service)


# ------------------------------------------------------------------------- ops


def exposed_dns_op(installer: NsmInstaller, ctx: RunContext, step_phase: str, role: str) -> Op:
    def action(clusters: Clusters) -> dict[str, Any]:
        cluster = clusters[role]
        kube_dns = cluster.api.get("v1", "Service", "kube-dns", coredns.COREDNS_NAMESPACE)
        if kube_dns is None:
            raise StepFailed("Service kube-system/kube-dns does not exist")
        selector = (kube_dns.get("spec") or {}).get("selector") or {}
        if not selector:
            raise StepFailed("Service kube-system/kube-dns has no selector to copy")
        cluster.apply([installer.exposed_dns_service(ctx, role, selector)])
        return {f"exposed_dns_selector_{role}": selector}

    return call_op(
        step_phase,
        role,
        "manifest",
        step_text(
            "interdomain DNS", f"expose kube-dns as LoadBalancer Service {EXPOSED_DNS} (53/TCP)"
        ),
        action,
        "# the selector is copied from Service kube-system/kube-dns at run time (what\n"
        "# `kubectl expose service kube-dns` does); usually k8s-app: kube-dns\n"
        + render([installer.exposed_dns_service(ctx, role, {"k8s-app": "kube-dns"})]),
    )


def apply_interdomain_corefile(
    cluster: KubeCluster, original: str, role: str, peer_ip: str
) -> None:
    """Serve this cluster's LoadBalancer names and forward the peer's to ``peer_ip``."""
    edited = coredns.interdomain_corefile(
        original, NSM_CLUSTER[role], NSM_CLUSTER[other(role)], peer_ip
    )
    cluster.apply([coredns.coredns_config_map(edited)])


def edit_corefile_op(installer: NsmInstaller, ctx: RunContext, step_phase: str, role: str) -> Op:
    saved = saved_corefile_name(ctx)
    own, peer = NSM_CLUSTER[role], NSM_CLUSTER[other(role)]

    def action(clusters: Clusters) -> dict[str, Any]:
        cluster = clusters[role]
        current, kept = corefile_and_kept(cluster, saved)
        if coredns.MARKER in current:
            if kept is None:
                raise StepFailed(
                    "CoreDNS already carries interdomain changes but no original was kept: "
                    "restore the Corefile by hand before running"
                )
            return {f"coredns_{role}": "already changed by an earlier try"}
        if kept is None:
            cluster.apply([saved_corefile(ctx, current)])
        state = load_balancer_state(
            clusters[other(role)].api, coredns.COREDNS_NAMESPACE, EXPOSED_DNS
        )
        if not state.ready:
            raise StepFailed("; ".join(state.pending))
        peer_ip = resolve_ipv4(
            str(state.value), installer.timeouts.load_balancer, installer.dns_interval
        )
        apply_interdomain_corefile(cluster, current, role, peer_ip)
        forwarded = f"{coredns.domain(peer)} -> {peer_ip}"
        return {f"coredns_{role}": f"k8s_external {coredns.domain(own)}, {forwarded}"}

    return call_op(
        step_phase,
        role,
        "manifest",
        step_text(
            "interdomain DNS",
            f"keep the original Corefile, then CoreDNS serves {coredns.domain(own)} and "
            f"forwards {coredns.domain(peer)} to the {other(role)} cluster",
        ),
        action,
        f"GET ConfigMap kube-system/coredns; if not kept yet: save its Corefile as ConfigMap "
        f"kube-system/{saved}\nadd to the '.:53' block:   k8s_external {coredns.domain(own)}\n"
        f"append:   {coredns.domain(peer)}:53 {{ forward . <{other(role)} {EXPOSED_DNS} "
        f"address>:53 {{ force_tcp }} }}\n(a hostname is resolved to an IPv4 address on the "
        f"worker, retried every {installer.dns_interval:g}s for up to "
        f"{installer.timeouts.load_balancer:g}s)",
    )


def dns_probe_command(installer: NsmInstaller, ctx: RunContext, role: str) -> list[str]:
    """kubectl arguments: a pod (nginx's image, which has getent) asks the cluster's
    CoreDNS for the peer's exposed kube-dns until it answers: only an edited Corefile
    that CoreDNS has reloaded forwards that name (``reload`` checks every 30s)."""
    name = probe_name(NSM_CLUSTER[other(role)])
    interval = installer.dns_interval
    tries = max(1, int(installer.timeouts.probe // interval))
    script = (
        f"for i in $(seq {tries}); do getent hosts {name} && exit 0; "
        f"sleep {interval:g}; done; echo {shlex.quote(name)} never answered >&2; "
        f"exit 1"
    )
    return [
        "run",
        f"{ctx.resource_prefix}-dns-probe",
        "--namespace",
        coredns.COREDNS_NAMESPACE,
        "--rm",
        "--attach",
        "--quiet",
        "--restart=Never",
        f"--image={installer.config.kubernetes.nginx.image}",
        "--labels=" + ",".join(f"{k}={v}" for k, v in managed_labels(ctx).items()),
        "--command",
        "--",
        "sh",
        "-c",
        script,
    ]


def probe_dns(installer: NsmInstaller, ctx: RunContext, cluster: KubeCluster, role: str) -> str:
    args = dns_probe_command(installer, ctx, role)
    timeouts = installer.timeouts
    # A probe pod left by an interrupted try would make `kubectl run` fail.
    cluster.kubectl(
        "delete", "pod", args[1], "--namespace", coredns.COREDNS_NAMESPACE,
        "--ignore-not-found", "--wait=true", timeout=timeouts.command,
    )  # fmt: skip
    result = cluster.kubectl(*args, timeout=timeouts.probe + timeouts.command)
    answer = result.stdout.strip().splitlines()
    return answer[-1] if answer else "answered"


def dns_probe_op(installer: NsmInstaller, ctx: RunContext, step_phase: str, role: str) -> Op:
    args = dns_probe_command(installer, ctx, role)

    def action(clusters: Clusters) -> dict[str, Any]:
        return {f"dns_probe_{role}": probe_dns(installer, ctx, clusters[role], role)}

    return call_op(
        step_phase,
        role,
        "command",
        step_text(
            "interdomain DNS",
            f"CoreDNS answers {probe_name(NSM_CLUSTER[other(role)])} (the edited Corefile "
            f"is live), probed from a pod",
        ),
        action,
        format_command(
            ["kubectl", "delete", "pod", args[1], "-n", "kube-system", "--ignore-not-found"]
        )
        + "\n"
        + format_command(["kubectl", *args])
        + f"\nup to {installer.timeouts.probe:g}s, then the step fails",
    )


def pinned_address_op(installer: NsmInstaller, ctx: RunContext, step_phase: str, role: str) -> Op:
    """The peer's DNS load balancer may have new addresses since prepare_pair pinned
    one in the Corefile: re-resolve it, and re-pin (and probe) when it moved."""
    saved = saved_corefile_name(ctx)
    peer = NSM_CLUSTER[other(role)]

    def action(clusters: Clusters) -> dict[str, Any]:
        cluster = clusters[role]
        current, kept = corefile_and_kept(cluster, saved)
        pinned = pinned_forward_address(current, peer)
        if pinned is None or kept is None:
            raise StepFailed(
                f"CoreDNS no longer forwards {coredns.domain(peer)} as prepare_pair set it "
                f"up (or ConfigMap kube-system/{saved} is gone): run prepare_pair again"
            )
        peer_address = clusters[other(role)].wait_load_balancer(
            coredns.COREDNS_NAMESPACE, EXPOSED_DNS, installer.timeouts.load_balancer
        )
        now = resolve_ipv4(peer_address, installer.timeouts.load_balancer, installer.dns_interval)
        if now == pinned:
            return {f"coredns_pinned_{role}": f"{coredns.domain(peer)} -> {pinned} (unchanged)"}
        apply_interdomain_corefile(cluster, coredns.corefile_of(kept), role, now)
        probe = probe_dns(installer, ctx, cluster, role)
        return {
            f"coredns_pinned_{role}": f"{coredns.domain(peer)} moved {pinned} -> {now}",
            f"dns_probe_{role}": probe,
        }

    return call_op(
        step_phase,
        role,
        "api",
        step_text(
            "preflight",
            f"interdomain DNS: the address CoreDNS forwards {coredns.domain(peer)} to is "
            f"still the "
            f"{other(role)} cluster's {EXPOSED_DNS} address",
        ),
        action,
        f"GET ConfigMap kube-system/coredns: the address in its {coredns.domain(peer)} "
        f"forward; resolve the {other(role)} Service kube-system/{EXPOSED_DNS} address "
        f"again; if it moved: re-edit the kept original with the new address and probe as "
        f"in prepare_pair",
    )


def restore_corefile_op(ctx: RunContext, step_phase: str, role: str) -> Op:
    saved = saved_corefile_name(ctx)

    def action(clusters: Clusters) -> dict[str, Any]:
        cluster = clusters[role]
        kept = cluster.api.get("v1", "ConfigMap", saved, coredns.COREDNS_NAMESPACE)
        current_map = cluster.api.get(
            "v1", "ConfigMap", coredns.COREDNS_CONFIGMAP, coredns.COREDNS_NAMESPACE
        )
        if kept is None:
            if current_map and coredns.MARKER in coredns.corefile_of(current_map):
                raise StepFailed(
                    f"CoreDNS carries interdomain changes but ConfigMap kube-system/{saved} "
                    f"with the original is gone: restore the Corefile by hand"
                )
            return {f"coredns_{role}": "nothing to restore"}
        original = coredns.corefile_of(kept)
        cluster.apply([coredns.coredns_config_map(original)])
        cluster.delete("v1", "ConfigMap", saved, coredns.COREDNS_NAMESPACE)
        return {f"coredns_{role}": "original Corefile restored"}

    return call_op(
        step_phase,
        role,
        "manifest",
        step_text("interdomain DNS", "restore the original Corefile and drop the kept copy"),
        action,
        f"GET ConfigMap kube-system/{saved}; server-side apply its Corefile to "
        f"kube-system/coredns; DELETE kube-system/{saved}",
    )
