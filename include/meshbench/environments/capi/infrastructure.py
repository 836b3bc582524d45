"""prepare_pair: LoadBalancer Services on bare metal (MetalLB, the Equinix CCM)."""

from __future__ import annotations

from meshbench.backend import RunContext
from meshbench.environments import capi_manifests as manifests
from meshbench.environments.capi.management import CapiBase, done
from meshbench.environments.provider import ROLES
from meshbench.kube.cluster import Clusters
from meshbench.kube.ops import Op, call_op, render_manifests
from meshbench.kube.redact import format_command

CPEM_DEPLOYMENT = "cloud-provider-equinix-metal"


class LoadBalancerSetup(CapiBase):
    """prepare_pair: MetalLB gives LoadBalancer Services on bare metal."""

    def prepare_ops(self, ctx: RunContext) -> list[Op]:
        env = self.env
        install = [
            "apply",
            "--server-side",
            "-f",
            manifests.metallb_manifest_url(env.metallb_version),
        ]
        ops: list[Op] = []
        for role in ROLES:
            name = self.cluster_name(ctx, role)
            ops.append(
                self.kubectl_op(
                    "prepare_pair",
                    role,
                    f"Install MetalLB {env.metallb_version} in {name} (LoadBalancer Services on "
                    f"bare metal; configured by CRDs from v0.13)",
                    install,
                )
            )
            ops.append(
                call_op(
                    "prepare_pair",
                    role,
                    "wait",
                    "Wait for MetalLB's controller and speakers (its webhook rejects "
                    "configuration before that)",
                    lambda clusters, role=role: done(
                        clusters[role].wait_pods_ready(
                            manifests.METALLB_NAMESPACE, "app=metallb", env.cluster_ready_timeout, 2
                        )
                    ),
                    f"pods -l app=metallb in {manifests.METALLB_NAMESPACE} Ready",
                )
            )
            if env.metallb_mode == "cpem-bgp":
                restart = [
                    "-n",
                    "kube-system",
                    "rollout",
                    "restart",
                    f"deployment/{CPEM_DEPLOYMENT}",
                ]
                ops.append(
                    call_op(
                        "prepare_pair",
                        role,
                        "command",
                        "Restart the Equinix cloud controller so it finds MetalLB: it manages "
                        "the IPAddressPool, BGPPeers and BGPAdvertisement per Service (BGP, one "
                        f"Elastic IP each; set in metal-cloud-config as "
                        f"{manifests.METALLB_CPEM_URL})",
                        lambda clusters, role=role, restart=restart: self._restart_cpem(
                            clusters, role, restart
                        ),
                        format_command(["kubectl", *restart]),
                    )
                )
            else:
                pool = manifests.metallb_l2_config(env.metallb_addresses[role])
                ops.append(
                    call_op(
                        "prepare_pair",
                        role,
                        "manifest",
                        f"MetalLB layer-2 address pool for {name}: "
                        + ", ".join(env.metallb_addresses[role]),
                        lambda clusters, role=role, pool=pool: done(clusters[role].apply(pool)),
                        render_manifests(pool),
                    )
                )
        return ops

    def _restart_cpem(self, clusters: Clusters, role: str, restart: list[str]) -> None:
        cluster = clusters[role]
        cluster.kubectl(*restart, timeout=self.env.command_timeout)
        cluster.wait_rollout("kube-system", CPEM_DEPLOYMENT, self.env.cluster_ready_timeout)
