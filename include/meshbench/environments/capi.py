"""The ``capi`` environment: two bare-metal workload clusters through Cluster API.

A management cluster (an Airflow ``kubernetes`` connection, ``management_conn_id``) runs
the Cluster API controllers; ``clusterctl init`` installs them once (core, kubeadm
bootstrap and control plane at ``core_version``, the infrastructure provider at
``infrastructure_version``) when they are missing. Per run, two workload clusters
``mb-<slug>-client`` and ``mb-<slug>-server`` (one control plane and one worker each; the
control plane keeps kubeadm's NoSchedule taint, so workloads run on the worker) are
created from manifests rendered here (``cluster_template: builtin``) or by ``clusterctl
generate cluster`` from a template URL, then labelled with the run's slug and annotated
with its DAG id, run id and creation time. The CNI (``cni_manifest_url``) goes in once the
control plane is initialised; MetalLB (>= 0.13, CRD configuration) gives LoadBalancer
Services in prepare_pair.

Workload kubeconfigs are read per task from the ``<cluster>-kubeconfig`` Secret Cluster API
keeps in the management cluster (what ``clusterctl get kubeconfig`` prints), written to a
0600 temporary file and removed afterwards. Deletion goes through the Cluster objects
(``kubectl delete cluster``), never ``delete -f`` of the manifests, and waits until they are
gone. The provider's API token comes from ``credentials_conn_id`` and is only handed to
``clusterctl init`` through its environment.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import yaml

from meshbench.backend import RunContext, Step, StepFailed
from meshbench.config import BenchmarkConfig, CapiEnvironment
from meshbench.environments import capi_manifests as manifests
from meshbench.environments.provider import (
    ROLES,
    ClusterProvider,
    Leftover,
    isoformat,
    parse_timestamp,
    utcnow,
)
from meshbench.kube.access import (
    ClusterAccess,
    ClusterAccessError,
    ConnectionAccess,
    select_context,
)
from meshbench.kube.api import KubeApi
from meshbench.kube.cluster import ApiFactory, Clusters, KubeCluster, default_api_factory
from meshbench.kube.ops import Op, call_op, plan_steps, render_manifests, run_ops
from meshbench.kube.redact import MASK, format_command
from meshbench.kube.runner import CommandRunner
from meshbench.kube.waits import Readiness

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from meshbench.backend import Backend

log = logging.getLogger(__name__)

ENVIRONMENT = "capi"
MANAGEMENT = "management"
PROVIDER_API = "clusterctl.cluster.x-k8s.io/v1alpha3"
KUBECONFIG_SECRET = "{name}-kubeconfig"
MANAGED_SELECTOR = f"{manifests.LABEL_MANAGED}=true"
# Where each provider's controllers run once ``clusterctl init`` is done.
PROVIDER_TYPES = {
    "CoreProvider": "cluster-api",
    "BootstrapProvider": "kubeadm",
    "ControlPlaneProvider": "kubeadm",
}
CPEM_DEPLOYMENT = "cloud-provider-equinix-metal"
NODES_PER_CLUSTER = 2  # one control plane, one worker


@dataclass(frozen=True)
class Credentials:
    """What the infrastructure provider needs; ``api_key`` is a secret."""

    api_key: str
    project_id: str
    ssh_keys: tuple[str, ...] = ()


def read_credentials(conn_id: str) -> Credentials:
    """From an Airflow connection: password = API token; extra ``project_id`` and an
    optional ``ssh_public_key`` (one key per line)."""
    from airflow.sdk import BaseHook

    try:
        connection = BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise StepFailed(f"Cluster API credentials connection {conn_id!r}: {exc}") from None
    extras = connection.extra_dejson or {}
    api_key = connection.password or ""
    project_id = str(extras.get("project_id") or "")
    if not api_key or not project_id:
        raise StepFailed(
            f"connection {conn_id!r} must hold the provider's API token as password and "
            f"project_id in its extra"
        )
    keys = tuple(
        line.strip() for line in str(extras.get("ssh_public_key") or "").splitlines() if line
    )
    return Credentials(api_key, project_id, keys)


class CapiWorkloadAccess(ClusterAccess):
    """A workload cluster, reached with the kubeconfig Cluster API stores in the management
    cluster as Secret ``<name>-kubeconfig`` (key ``value``)."""

    def __init__(
        self,
        role: str,
        cluster_name: str,
        namespace: str,
        management: ClusterAccess,
        api_factory: ApiFactory = default_api_factory,
    ) -> None:
        super().__init__(role)
        self.cluster_name = cluster_name
        self.namespace = namespace
        self.management = management
        self.api_factory = api_factory

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "kubeconfig_source": (
                f"cluster-api secret {self.namespace}/"
                f"{KUBECONFIG_SECRET.format(name=self.cluster_name)}"
            ),
            "cluster": self.cluster_name,
            "management": self.management.describe(),
        }

    def kubeconfig(self) -> dict[str, Any]:
        secret_name = KUBECONFIG_SECRET.format(name=self.cluster_name)
        with self.management.open() as path:
            api = self.api_factory(self.management, path)
            secret = api.get("v1", "Secret", secret_name, self.namespace)
        if secret is None:
            raise ClusterAccessError(
                f"{self.role} cluster {self.cluster_name}: Secret {self.namespace}/{secret_name} "
                f"does not exist yet (the control plane is not initialised)"
            )
        encoded = (secret.get("data") or {}).get("value")
        if not encoded:
            raise ClusterAccessError(f"Secret {self.namespace}/{secret_name} has no 'value' key")
        document = yaml.safe_load(base64.b64decode(encoded))
        if not isinstance(document, dict):
            raise ClusterAccessError(f"Secret {self.namespace}/{secret_name} holds no kubeconfig")
        return select_context(document, None)

    def api_client(self, kubeconfig_path: str) -> ApiClient:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
        from kubernetes.client import Configuration

        hook = KubernetesHook(
            conn_id=None, config_file=kubeconfig_path, client_configuration=Configuration()
        )
        return hook.get_conn()


def _done(_result: Any) -> None:
    """Op actions return a summary dict or None; plain results are not summaries."""
    return None


def _provider_state(api: KubeApi, wanted: dict[str, tuple[str, str]]) -> Readiness:
    """Whether the management cluster has each wanted provider type at its version."""
    installed = {
        (item.get("type"), item.get("providerName")): item.get("version")
        for item in api.list(PROVIDER_API, "Provider")
    }
    pending = []
    for provider_type, (name, version) in wanted.items():
        found = installed.get((provider_type, name))
        if found is None:
            pending.append(f"{provider_type} {name} is not installed")
        elif found != version:
            pending.append(f"{provider_type} {name} is {found}, not {version}")
    return Readiness(not pending, tuple(pending), installed)


class CapiProvider(ClusterProvider):
    """Cluster API workload clusters for one run; every method is safe to repeat."""

    environment = ENVIRONMENT

    def __init__(
        self,
        config: BenchmarkConfig,
        *,
        runner: CommandRunner | None = None,
        api_factory: ApiFactory = default_api_factory,
        credentials: Callable[[], Credentials] | None = None,
        management_access: ClusterAccess | None = None,
    ) -> None:
        env = config.environments.capi
        super().__init__(
            config,
            runner=runner or CommandRunner(default_timeout=env.command_timeout),
            api_factory=api_factory,
        )
        self.env: CapiEnvironment = env
        self._credentials = credentials or (lambda: read_credentials(self.env.credentials_conn_id))
        self.management_access = management_access or ConnectionAccess(
            MANAGEMENT, self.env.management_conn_id
        )

    # -- access ------------------------------------------------------------------------
    def access(self, ctx: RunContext, role: str) -> CapiWorkloadAccess:
        return CapiWorkloadAccess(
            role,
            self.cluster_name(ctx, role),
            self.env.namespace,
            self.management_access,
            self.api_factory,
        )

    def clusters(self, ctx: RunContext | None) -> Clusters:
        """Management plus (with a run) both workload clusters, opened on first use."""
        accesses: dict[str, ClusterAccess] = {MANAGEMENT: self.management_access}
        if ctx is not None:
            accesses.update({role: self.access(ctx, role) for role in ROLES})
        return Clusters(
            accesses, self.runner, self.api_factory, poll_interval=self.env.poll_interval
        )

    # -- what gets made ----------------------------------------------------------------
    @property
    def wanted_providers(self) -> dict[str, tuple[str, str]]:
        core = self.env.core_version
        return {
            **{kind: (name, core) for kind, name in PROVIDER_TYPES.items()},
            "InfrastructureProvider": (
                self.env.infrastructure_provider,
                self.env.infrastructure_version,
            ),
        }

    def init_args(self) -> list[str]:
        core = self.env.core_version
        return [
            "init",
            "--core",
            f"cluster-api:{core}",
            "--bootstrap",
            f"kubeadm:{core}",
            "--control-plane",
            f"kubeadm:{core}",
            "--infrastructure",
            f"{self.env.infrastructure_provider}:{self.env.infrastructure_version}",
            "--wait-providers",
        ]

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
            control_plane_machine_type=env.control_plane_machine_type or env.machine_type,
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
            "CONTROLPLANE_NODE_TYPE": env.control_plane_machine_type or env.machine_type,
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

    # -- steps -------------------------------------------------------------------------
    def _ensure_providers(self, clusters: Clusters) -> dict[str, Any]:
        management = clusters[MANAGEMENT]
        state = _provider_state(management.api, self.wanted_providers)
        if state.ready:
            log.info("Cluster API providers already installed: %s", state.value)
            return {"providers": "present"}
        missing = [line for line in state.pending if "is not installed" in line]
        if len(missing) != len(state.pending):
            # Another version is installed; upgrading a shared management cluster is not
            # this pipeline's call.
            raise StepFailed(
                "management cluster has other provider versions: "
                + "; ".join(state.pending)
                + " (upgrade with clusterctl upgrade, or change the versions in the config)"
            )
        credentials = self._credentials()
        runner = dataclasses.replace(
            management.runner,
            env={**management.runner.env, self.env.credentials_env_var: credentials.api_key},
        ).with_secrets([credentials.api_key])
        runner.run("clusterctl", self.init_args(), timeout=self.env.cluster_ready_timeout)
        after = _provider_state(management.api, self.wanted_providers)
        if not after.ready:
            raise StepFailed("after clusterctl init: " + "; ".join(after.pending))
        return {"providers": "installed"}

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

    def _describe_conditions(self, clusters: Clusters, name: str) -> None:
        """Log clusterctl's condition tree (best effort, for whoever reads the task log)."""
        try:
            result = clusters[MANAGEMENT].run(
                "clusterctl",
                ["describe", "cluster", name, "-n", self.env.namespace, "--show-conditions", "all"],
                check=False,
                timeout=self.env.command_timeout,
            )
            log.info("clusterctl describe cluster %s:\n%s", name, result.stdout.strip())
        except StepFailed as exc:
            log.warning("clusterctl describe cluster %s failed: %s", name, exc)

    def _wait_cluster_condition(
        self, clusters: Clusters, name: str, condition: str, timeout: float
    ) -> None:
        try:
            clusters[MANAGEMENT].wait_condition(
                manifests.CLUSTER_API, "Cluster", name, condition, timeout, self.env.namespace
            )
        except StepFailed:
            self._describe_conditions(clusters, name)
            raise

    def create_ops(self, ctx: RunContext) -> list[Op]:
        env = self.env
        ns = env.namespace
        ops: list[Op] = []
        init_line = format_command(["clusterctl", *self.init_args()])
        ops.append(
            call_op(
                "create_clusters",
                MANAGEMENT,
                "command",
                "Install the Cluster API providers unless the management cluster has them "
                f"(core {env.core_version}, kubeadm bootstrap and control plane "
                f"{env.core_version}, {env.infrastructure_provider} "
                f"{env.infrastructure_version})",
                self._ensure_providers,
                f"GET {PROVIDER_API} Provider (all namespaces)\n"
                f"if missing: {env.credentials_env_var}={MASK} {init_line}\n"
                f"({env.credentials_env_var} from connection {env.credentials_conn_id!r})",
            )
        )
        placeholder = Credentials(
            api_key=MASK,
            project_id=f"<project_id from connection {env.credentials_conn_id}>",
            ssh_keys=(f"<ssh_public_key from connection {env.credentials_conn_id}>",),
        )
        for role in ROLES:
            name = self.cluster_name(ctx, role)
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
            ops.append(
                call_op(
                    "create_clusters",
                    MANAGEMENT,
                    "manifest",
                    f"Create (or adopt) workload cluster {ns}/{name}: Cluster, "
                    f"{env.infrastructure_provider} kinds, KubeadmControlPlane (1 x "
                    f"{env.control_plane_machine_type or env.machine_type}) and "
                    f"MachineDeployment (1 x {env.machine_type} worker), Kubernetes "
                    f"{env.kubernetes_version}, metro {env.metro}; {how}; server-side apply",
                    lambda clusters, role=role: self._apply_cluster(ctx, role, clusters),
                    detail,
                )
            )
        for role in ROLES:
            name = self.cluster_name(ctx, role)
            ops.append(
                call_op(
                    "create_clusters",
                    MANAGEMENT,
                    "wait",
                    f"Wait until Cluster {name} has ControlPlaneInitialized",
                    lambda clusters, name=name: self._wait_cluster_condition(
                        clusters, name, "ControlPlaneInitialized", env.cluster_ready_timeout
                    ),
                    f"kubectl wait --for=condition=ControlPlaneInitialized cluster/{name} -n "
                    f"{ns} --timeout={env.cluster_ready_timeout:g}s",
                )
            )
        cni_args = ["apply", "--server-side", "--force-conflicts", "-f", env.cni_manifest_url]
        for role in ROLES:
            name = self.cluster_name(ctx, role)
            ops.append(
                call_op(
                    "create_clusters",
                    role,
                    "command",
                    f"Install the CNI in {name} (the template installs none; the control plane "
                    f"is not Ready without one)",
                    lambda clusters, role=role: _done(
                        clusters[role].kubectl(*cni_args, timeout=env.command_timeout)
                    ),
                    f"kubeconfig: Secret {ns}/{KUBECONFIG_SECRET.format(name=name)} (what "
                    f"clusterctl get kubeconfig {name} prints), 0600 temporary file\n"
                    + format_command(["kubectl", *cni_args]),
                )
            )
        for role in ROLES:
            name = self.cluster_name(ctx, role)
            workers = f"{name}-{manifests.WORKER_POOL}"
            ops.append(
                call_op(
                    "create_clusters",
                    MANAGEMENT,
                    "wait",
                    f"Wait until Cluster {name} is Ready and its worker MachineDeployment is "
                    f"Available; log clusterctl describe",
                    lambda clusters, name=name, workers=workers: self._wait_ready(
                        clusters, name, workers
                    ),
                    f"kubectl wait --for=condition=Ready cluster/{name} -n {ns}\n"
                    f"kubectl wait --for=condition=Available machinedeployment/{workers} -n "
                    f"{ns}\n"
                    + format_command(
                        [
                            "clusterctl",
                            "describe",
                            "cluster",
                            name,
                            "-n",
                            ns,
                            "--show-conditions",
                            "all",
                        ]
                    ),
                )
            )
        for role in ROLES:
            wait_args = [
                "wait",
                "--for=condition=Ready",
                "nodes",
                "--all",
                f"--timeout={env.cluster_ready_timeout:g}s",
            ]
            ops.append(
                call_op(
                    "create_clusters",
                    role,
                    "wait",
                    f"Wait until both nodes of {self.cluster_name(ctx, role)} are Ready",
                    lambda clusters, role=role, wait_args=wait_args: self._wait_nodes(
                        clusters, role, wait_args
                    ),
                    format_command(["kubectl", *wait_args]),
                )
            )
        return ops

    def _wait_ready(self, clusters: Clusters, name: str, workers: str) -> None:
        timeout = self.env.cluster_ready_timeout
        self._wait_cluster_condition(clusters, name, "Ready", timeout)
        clusters[MANAGEMENT].wait_condition(
            manifests.CLUSTER_API,
            "MachineDeployment",
            workers,
            "Available",
            timeout,
            self.env.namespace,
        )
        self._describe_conditions(clusters, name)

    def _wait_nodes(self, clusters: Clusters, role: str, wait_args: list[str]) -> None:
        cluster = clusters[role]

        def state(api: KubeApi) -> Readiness:
            nodes = api.list("v1", "Node")
            if len(nodes) < NODES_PER_CLUSTER:
                return Readiness(False, (f"{len(nodes)} of {NODES_PER_CLUSTER} nodes joined",))
            return Readiness(True)

        cluster.wait(state, f"{NODES_PER_CLUSTER} nodes registered", self.env.cluster_ready_timeout)
        cluster.kubectl(*wait_args, timeout=self.env.cluster_ready_timeout + 30)

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
                call_op(
                    "prepare_pair",
                    role,
                    "command",
                    f"Install MetalLB {env.metallb_version} in {name} (LoadBalancer Services on "
                    f"bare metal; configured by CRDs from v0.13)",
                    lambda clusters, role=role: _done(
                        clusters[role].kubectl(*install, timeout=env.command_timeout)
                    ),
                    format_command(["kubectl", *install]),
                )
            )
            ops.append(
                call_op(
                    "prepare_pair",
                    role,
                    "wait",
                    "Wait for MetalLB's controller and speakers (its webhook rejects "
                    "configuration before that)",
                    lambda clusters, role=role: _done(
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
                        lambda clusters, role=role, pool=pool: _done(clusters[role].apply(pool)),
                        render_manifests(pool),
                    )
                )
        return ops

    def _restart_cpem(self, clusters: Clusters, role: str, restart: list[str]) -> None:
        cluster = clusters[role]
        cluster.kubectl(*restart, timeout=self.env.command_timeout)
        cluster.wait_rollout("kube-system", CPEM_DEPLOYMENT, self.env.cluster_ready_timeout)

    def delete_ops(self, ctx: RunContext) -> list[Op]:
        env = self.env
        names = [self.cluster_name(ctx, role) for role in ROLES]
        ops = [
            call_op(
                "delete_clusters",
                MANAGEMENT,
                "command",
                f"Delete the Cluster objects {', '.join(names)} (Cluster API removes their "
                f"machines and objects; never delete -f of the manifests)",
                lambda clusters: _done(self._delete_clusters(clusters, names)),
                "\n".join(
                    f"kubectl delete cluster {name} -n {env.namespace} --wait=false"
                    for name in names
                ),
            ),
            call_op(
                "delete_clusters",
                MANAGEMENT,
                "wait",
                f"Wait up to {env.delete_timeout:g}s until both Cluster objects are gone",
                lambda clusters: self._wait_gone(clusters, names),
                "\n".join(
                    f"kubectl wait --for=delete cluster/{name} -n {env.namespace} "
                    f"--timeout={env.delete_timeout:g}s"
                    for name in names
                ),
            ),
        ]
        if env.infrastructure_provider == "packet":
            ops.append(
                call_op(
                    "delete_clusters",
                    None,
                    "api",
                    "Not removed by Cluster API: the control-plane Elastic IPs tagged "
                    + ", ".join(f"cluster-api-provider-packet:cluster-id:{name}" for name in names)
                    + " (remove them in the provider's console or API)",
                    lambda clusters: None,
                )
            )
        return ops

    def _delete_clusters(self, clusters: Clusters, names: list[str]) -> dict[str, str]:
        management = clusters[MANAGEMENT]
        outcome = {}
        for name in names:
            deleted = management.delete(manifests.CLUSTER_API, "Cluster", name, self.env.namespace)
            outcome[name] = "deleted" if deleted else "already gone"
            log.info("Cluster %s/%s: %s", self.env.namespace, name, outcome[name])
        return outcome

    def _wait_gone(self, clusters: Clusters, names: list[str]) -> None:
        management = clusters[MANAGEMENT]
        for name in names:
            management.wait_gone(
                manifests.CLUSTER_API, "Cluster", name, self.env.delete_timeout, self.env.namespace
            )
        if self.env.infrastructure_provider == "packet":
            for name in names:
                log.warning(
                    "remove the control-plane Elastic IP tagged "
                    "cluster-api-provider-packet:cluster-id:%s by hand: Cluster API does not",
                    name,
                )

    # -- the tasks ---------------------------------------------------------------------
    def create(self, ctx: RunContext) -> dict[str, Any]:
        with self.clusters(ctx) as clusters:
            summary = run_ops(self.create_ops(ctx), clusters)
        return {
            "environment": ENVIRONMENT,
            "namespace": self.env.namespace,
            "clusters": {role: summary.get(f"{role}_cluster") for role in ROLES},
            "providers": summary.get("providers"),
            "steps": summary["steps"],
        }

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        with self.clusters(ctx) as clusters:
            summary = run_ops(self.prepare_ops(ctx), clusters)
        return {"metallb": self.env.metallb_mode, "steps": summary["steps"]}

    def usage(self, clusters: Clusters, names: list[str]) -> dict[str, datetime | None]:
        found = {}
        for name in names:
            cluster = clusters[MANAGEMENT].api.get(
                manifests.CLUSTER_API, "Cluster", name, self.env.namespace
            )
            metadata = (cluster or {}).get("metadata") or {}
            found[name] = parse_timestamp(metadata.get("creationTimestamp")) or parse_timestamp(
                (metadata.get("annotations") or {}).get(manifests.ANNOTATION_CREATED_AT)
            )
        return found

    def minutes_used(self, found: dict[str, datetime | None], ended: datetime) -> dict[str, Any]:
        clusters = {}
        cluster_minutes = 0.0
        for name, created in found.items():
            if created is None:
                clusters[name] = {"found": False}
                continue
            minutes = (ended - created).total_seconds() / 60
            cluster_minutes += minutes
            clusters[name] = {
                "found": True,
                "created_at": isoformat(created),
                "cluster_minutes": round(minutes, 2),
            }
        machine_minutes = cluster_minutes * NODES_PER_CLUSTER
        return {
            "cluster_minutes": round(cluster_minutes, 2),
            "node_minutes": round(machine_minutes, 2),
            "estimated_cost_usd": round(machine_minutes / 60 * self.env.prices.machine_hour, 2),
            "cost_basis": "machine price from config (estimate; management cluster excluded)",
            "complete": all(item["found"] for item in clusters.values()),
            "clusters": clusters,
            "ended_at": isoformat(ended),
        }

    def delete(self, ctx: RunContext) -> dict[str, Any]:
        names = [self.cluster_name(ctx, role) for role in ROLES]
        with self.clusters(None) as clusters:
            found = self.usage(clusters, names)
            summary = run_ops(self.delete_ops(ctx), clusters)
        used = self.minutes_used(found, utcnow())
        used["steps"] = summary["steps"]
        log.info(
            "run %s used %.1f cluster-minutes (about $%.2f)",
            ctx.slug,
            used["cluster_minutes"],
            used["estimated_cost_usd"],
        )
        return used

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        env = self.env
        return {
            "provider": f"cluster-api/{env.infrastructure_provider}",
            "cluster_api": env.core_version,
            "infrastructure": f"{env.infrastructure_provider}:{env.infrastructure_version}",
            "kubernetes_version": env.kubernetes_version,
            "clusters": self.cluster_names(ctx),
            "machine_type": env.machine_type,
            "control_plane_machine_type": env.control_plane_machine_type or env.machine_type,
            "metro": env.metro,
            "node_os": env.node_os,
            "cluster_template": env.cluster_template,
            "cni": env.cni_manifest_url,
            "metallb": f"{env.metallb_version} ({env.metallb_mode})",
            "prices_per_hour": env.prices.model_dump(),
        }

    # -- plan --------------------------------------------------------------------------
    def plan_create(self, ctx: RunContext) -> list[Step]:
        return plan_steps(self.create_ops(ctx))

    def plan_prepare(self, ctx: RunContext) -> list[Step]:
        return plan_steps(self.prepare_ops(ctx))

    def plan_delete(self, ctx: RunContext) -> list[Step]:
        return plan_steps(self.delete_ops(ctx))

    def plan_warnings(self, ctx: RunContext) -> list[str]:
        warnings = []
        if self.env.infrastructure_provider == "packet":
            warnings.append(
                "Equinix Metal closed in June 2026 and the packet provider is deprecated: this "
                "path reproduces the study's set-up but cannot run there any more. Point "
                "cluster_template, credentials_env_var and metallb_mode at another provider."
            )
        return warnings

    # -- reaper ------------------------------------------------------------------------
    @property
    def reaper_ttl(self) -> float:
        return self.env.reaper_ttl

    def find_leftovers(self) -> list[Leftover]:
        with self.clusters(None) as clusters:
            items = clusters[MANAGEMENT].api.list(
                manifests.CLUSTER_API, "Cluster", self.env.namespace, MANAGED_SELECTOR
            )
        leftovers = []
        for item in items:
            metadata = item.get("metadata") or {}
            annotations = metadata.get("annotations") or {}
            leftovers.append(
                Leftover(
                    ENVIRONMENT,
                    "capi-cluster",
                    metadata.get("name", "?"),
                    parse_timestamp(annotations.get(manifests.ANNOTATION_CREATED_AT))
                    or parse_timestamp(metadata.get("creationTimestamp")),
                    dag_id=annotations.get(manifests.ANNOTATION_DAG_ID),
                    run_id=annotations.get(manifests.ANNOTATION_RUN_ID),
                    detail={
                        "namespace": metadata.get("namespace"),
                        "deleting": bool(metadata.get("deletionTimestamp")),
                    },
                )
            )
        return leftovers

    def remove(self, leftovers: list[Leftover]) -> dict[str, str]:
        outcome: dict[str, str] = {}
        names = [item.name for item in leftovers if item.kind == "capi-cluster"]
        if not names:
            return outcome
        with self.clusters(None) as clusters:
            try:
                deleted = self._delete_clusters(clusters, names)
            except StepFailed as exc:
                return {item.describe(): f"error: {exc}" for item in leftovers}
            for item in leftovers:
                try:
                    self._wait_gone(clusters, [item.name])
                    outcome[item.describe()] = deleted.get(item.name, "deleted")
                except StepFailed as exc:
                    outcome[item.describe()] = f"error: {exc}"
        return outcome


def build_backend(
    config: BenchmarkConfig,
    mesh: str,
    *,
    runner: CommandRunner | None = None,
    api_factory: ApiFactory = default_api_factory,
    **options: Any,
) -> Backend:
    """The registry's entry point. kubeadm clusters serve self-signed kubelet certificates,
    so metrics-server runs with ``--kubelet-insecure-tls`` here unless told otherwise."""
    from meshbench.environments.cloud import build_provisioned_backend

    runner = runner or CommandRunner(default_timeout=config.kubernetes.timeouts.command)
    options.setdefault(
        "metrics_server",
        config.kubernetes.metrics_server.for_kubernetes(
            config.environment("capi").kubernetes_version
        ).model_copy(update={"kubelet_insecure_tls": True}),
    )
    provider = CapiProvider(config, runner=runner, api_factory=api_factory)
    return build_provisioned_backend(
        config, mesh, provider, runner=runner, api_factory=api_factory, **options
    )
