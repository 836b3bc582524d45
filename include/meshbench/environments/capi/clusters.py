"""The workload clusters' manifests: rendered, labelled, applied or adopted."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import yaml

from meshbench.backend import RunContext, StepFailed
from meshbench.environments import capi_manifests as manifests
from meshbench.environments.capi.management import ENVIRONMENT, MANAGEMENT, CapiBase, Credentials
from meshbench.environments.provider import isoformat, utcnow
from meshbench.kube.cluster import Clusters, KubeCluster
from meshbench.kube.ops import Op, call_op, render_manifests
from meshbench.kube.redact import MASK, format_command

log = logging.getLogger(__name__)


class WorkloadClusterManifests(CapiBase):
    """The objects of one workload cluster, from the builtin template or ``clusterctl
    generate cluster``, labelled with the run's identity; applied or adopted."""

    def labels(self, ctx: RunContext, role: str) -> dict[str, str]:
        return {
            manifests.LABEL_MANAGED: "true",
            manifests.LABEL_ENVIRONMENT: ENVIRONMENT,
            manifests.LABEL_SLUG: ctx.slug,
            manifests.LABEL_ROLE: role,
        }

    def annotations(self, ctx: RunContext, created_at: str) -> dict[str, str]:
        return {
            manifests.ANNOTATION_DAG_ID: ctx.dag_id,
            manifests.ANNOTATION_RUN_ID: ctx.run_id,
            manifests.ANNOTATION_CREATED_AT: created_at,
        }

    def cluster_spec(
        self, ctx: RunContext, role: str, credentials: Credentials, created_at: str
    ) -> manifests.ClusterSpec:
        env = self.env
        return manifests.ClusterSpec(
            name=self.cluster_name(ctx, role),
            namespace=env.namespace,
            project_id=credentials.project_id,
            metro=env.metro,
            kubernetes_version=str(env.kubernetes_version),
            control_plane_machine_type=self.control_plane_machine_type,
            worker_machine_type=env.machine_type,
            node_os=env.node_os,
            pod_cidr=str(env.pod_cidr),
            service_cidr=str(env.service_cidr),
            cpem_version=env.cpem_version,
            ssh_keys=credentials.ssh_keys,
            metallb_via_cpem=env.metallb_mode == "cpem-bgp",
            labels=self.labels(ctx, role),
            annotations=self.annotations(ctx, created_at),
            machine_tags=("meshbench", f"meshbench-run-{ctx.slug}"),
        )

    def template_variables(self, credentials: Credentials) -> dict[str, str]:
        """Environment for ``clusterctl generate cluster`` (packet's variable names; extra
        ones from ``template_variables``)."""
        env = self.env
        return {
            "PROJECT_ID": credentials.project_id,
            "METRO": env.metro,
            "CONTROLPLANE_NODE_TYPE": self.control_plane_machine_type,
            "WORKER_NODE_TYPE": env.machine_type,
            "SSH_KEY": credentials.ssh_keys[0] if credentials.ssh_keys else "",
            "NODE_OS": env.node_os,
            "POD_CIDR": str(env.pod_cidr),
            "SERVICE_CIDR": str(env.service_cidr),
            "CPEM_VERSION": env.cpem_version,
            **env.template_variables,
        }

    def generate_args(self, ctx: RunContext, role: str) -> list[str]:
        env = self.env
        args = [
            "generate",
            "cluster",
            self.cluster_name(ctx, role),
            "--kubernetes-version",
            str(env.kubernetes_version),
            "--control-plane-machine-count",
            "1",
            "--worker-machine-count",
            "1",
            "--target-namespace",
            env.namespace,
        ]
        if env.cluster_template == "provider":
            args += [
                "--infrastructure",
                f"{env.infrastructure_provider}:{env.infrastructure_version}",
            ]
        else:
            args += ["--from", env.cluster_template]
        if env.cluster_template_flavor:
            args += ["--flavor", env.cluster_template_flavor]
        return args

    def render(
        self,
        ctx: RunContext,
        role: str,
        credentials: Credentials,
        created_at: str,
        management: KubeCluster | None = None,
    ) -> list[dict[str, Any]]:
        """The workload cluster's manifests: rendered here, or by clusterctl from a
        template (then labelled and annotated here)."""
        if self.env.cluster_template == "builtin":
            return manifests.render_cluster(self.cluster_spec(ctx, role, credentials, created_at))
        if management is None:
            raise StepFailed("clusterctl generate needs the management cluster")
        variables = self.template_variables(credentials)
        runner = dataclasses.replace(management.runner, env={**management.runner.env, **variables})
        result = runner.run("clusterctl", self.generate_args(ctx, role))
        documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        labels = self.labels(ctx, role)
        for document in documents:
            metadata = document.setdefault("metadata", {})
            metadata.setdefault("namespace", self.env.namespace)
            metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
            if document.get("kind") == "Cluster":
                metadata["annotations"] = {
                    **(metadata.get("annotations") or {}),
                    **self.annotations(ctx, created_at),
                }
        if not any(document.get("kind") == "Cluster" for document in documents):
            raise StepFailed(f"clusterctl generate cluster produced no Cluster for {role}")
        return documents

    def _namespace(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.env.namespace}}

    def _apply_cluster(self, ctx: RunContext, role: str, clusters: Clusters) -> dict[str, Any]:
        management = clusters[MANAGEMENT]
        name = self.cluster_name(ctx, role)
        existing = management.api.get(manifests.CLUSTER_API, "Cluster", name, self.env.namespace)
        created_at = isoformat(utcnow())
        adopted = False
        if existing is not None:
            metadata = existing.get("metadata") or {}
            slug = (metadata.get("labels") or {}).get(manifests.LABEL_SLUG)
            if slug != ctx.slug:
                raise StepFailed(
                    f"Cluster {self.env.namespace}/{name} exists but is not this run's (slug "
                    f"label {slug!r}, this run's is {ctx.slug!r}); refusing to adopt it"
                )
            if metadata.get("deletionTimestamp"):
                raise StepFailed(f"Cluster {name} is being deleted; retry once it is gone")
            created_at = (metadata.get("annotations") or {}).get(
                manifests.ANNOTATION_CREATED_AT, created_at
            )
            adopted = True
            log.info("adopting Cluster %s made by an earlier try (created %s)", name, created_at)
        management.apply([self._namespace()])
        documents = self.render(ctx, role, self._credentials(), created_at, management)
        applied = management.apply(documents)
        return {f"{role}_cluster": {"name": name, "adopted": adopted, "objects": applied}}

    def placeholder_credentials(self) -> Credentials:
        """What a plan shows where the credentials go: where each value comes from."""
        conn_id = self.env.credentials_conn_id
        return Credentials(
            api_key=MASK,
            project_id=f"<project_id from connection {conn_id}>",
            ssh_keys=(f"<ssh_public_key from connection {conn_id}>",),
        )

    def apply_cluster_op(self, ctx: RunContext, role: str) -> Op:
        env = self.env
        name = self.cluster_name(ctx, role)
        placeholder = self.placeholder_credentials()
        if env.cluster_template == "builtin":
            detail = render_manifests(
                [
                    self._namespace(),
                    *self.render(ctx, role, placeholder, "<creation time, UTC>"),
                ]
            )
            how = "rendered by meshbench (cluster_template: builtin)"
        else:
            variables = " ".join(
                f"{key}={value}" for key, value in self.template_variables(placeholder).items()
            )
            detail = (
                f"{variables} {format_command(['clusterctl', *self.generate_args(ctx, role)])}"
                f"\nthen label with the run's slug and server-side apply the output"
            )
            how = f"from clusterctl generate cluster ({env.cluster_template})"
        return call_op(
            "create_clusters",
            MANAGEMENT,
            "manifest",
            f"Create (or adopt) workload cluster {env.namespace}/{name}: Cluster, "
            f"{env.infrastructure_provider} kinds, KubeadmControlPlane (1 x "
            f"{self.control_plane_machine_type}) and "
            f"MachineDeployment (1 x {env.machine_type} worker), Kubernetes "
            f"{env.kubernetes_version}, metro {env.metro}; {how}; server-side apply",
            lambda clusters: self._apply_cluster(ctx, role, clusters),
            detail,
        )
