"""Cluster API manifests for one workload cluster, and MetalLB's configuration objects.

``render_cluster`` produces the kinds the packet provider's default template (v0.7.x)
creates, with the fields its API types and the Cluster API v1beta1 types document
(mesh-recipes.md section 5.3): ``Cluster``, ``PacketCluster``, ``KubeadmControlPlane``,
``PacketMachineTemplate`` (control plane and workers), ``MachineDeployment`` and
``KubeadmConfigTemplate``. The node bootstrap is meshbench's own: kubelet, kubeadm and
kubectl come from pkgs.k8s.io, because the v0.7.2 template's package host
(apt.kubernetes.io) no longer exists, and CPEM is told to manage MetalLB through its CRDs.

``{{ .apiKey }}``, ``{{ .controlPlaneEndpoint }}`` and ``{{ .kubernetesVersion }}`` in the
commands are filled in by the packet provider when it renders a machine's user data; the
API key therefore never appears in these manifests. ``{{ v1.instance_id }}`` is left for
cloud-init.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CLUSTER_API = "cluster.x-k8s.io/v1beta1"
CONTROL_PLANE_API = "controlplane.cluster.x-k8s.io/v1beta1"
BOOTSTRAP_API = "bootstrap.cluster.x-k8s.io/v1beta1"
INFRASTRUCTURE_API = "infrastructure.cluster.x-k8s.io/v1beta1"
METALLB_API = "metallb.io/v1beta1"

LABEL_MANAGED = "meshbench.io/managed"
LABEL_ENVIRONMENT = "meshbench.io/environment"
LABEL_SLUG = "meshbench.io/slug"
LABEL_ROLE = "meshbench.io/role"
ANNOTATION_DAG_ID = "meshbench.io/dag-id"
ANNOTATION_RUN_ID = "meshbench.io/run-id"
ANNOTATION_CREATED_AT = "meshbench.io/created-at"
CAPI_CLUSTER_NAME_LABEL = "cluster.x-k8s.io/cluster-name"

WORKER_POOL = "worker-a"
# Scripts are written as files and run with bash: cloud-init runs commands with /bin/sh.
BOOTSTRAP_SCRIPT = "/usr/local/bin/meshbench-node-bootstrap.sh"
CPEM_SCRIPT = "/usr/local/bin/meshbench-cpem-setup.sh"
# provider-id as the packet provider's template writes it: the outer Go template (rendered
# by the provider) emits a literal cloud-init expression.
PROVIDER_ID = "equinixmetal://{{ `{{ v1.instance_id }}` }}"
CPEM_MANIFEST = (
    "https://github.com/equinix/cloud-provider-equinix-metal/releases/download/"
    "{version}/deployment.yaml"
)
# CPEM drives MetalLB >= 0.13 through its CRDs only with crdConfiguration=true.
METALLB_CPEM_URL = "metallb:///metallb-system?crdConfiguration=true"
METALLB_NAMESPACE = "metallb-system"
METALLB_POOL = "meshbench"


def metallb_manifest_url(version: str) -> str:
    return f"https://raw.githubusercontent.com/metallb/metallb/{version}/config/manifests/metallb-native.yaml"


@dataclass(frozen=True)
class ClusterSpec:
    """Everything one workload cluster's manifests depend on."""

    name: str
    namespace: str
    project_id: str
    metro: str
    kubernetes_version: str  # "v1.28.3"
    control_plane_machine_type: str
    worker_machine_type: str
    node_os: str
    pod_cidr: str
    service_cidr: str
    cpem_version: str
    ssh_keys: tuple[str, ...] = ()
    control_plane_count: int = 1
    worker_count: int = 1
    metallb_via_cpem: bool = True
    labels: Mapping[str, str] | None = None
    annotations: Mapping[str, str] | None = None
    machine_tags: tuple[str, ...] = ()

    @property
    def kubernetes_minor(self) -> str:
        major, minor = self.kubernetes_version.lstrip("v").split(".")[:2]
        return f"v{major}.{minor}"


def _package_version(spec: ClusterSpec) -> str:
    return spec.kubernetes_version.lstrip("v")


def node_bootstrap(spec: ClusterSpec) -> str:
    """Shell run before kubeadm on every node: kernel settings, containerd and the pinned
    kubelet/kubeadm/kubectl from the community package host (pkgs.k8s.io)."""
    minor = spec.kubernetes_minor
    wanted = _package_version(spec).replace(".", r"\.")
    return (
        "\n".join(
            [
                "#!/bin/bash",
                "set -euo pipefail",
                "swapoff -a",
                r"sed -ri '/\sswap\s/s/^#?/#/' /etc/fstab",
                "printf 'overlay\\nbr_netfilter\\n' > /etc/modules-load.d/kubernetes.conf",
                "modprobe overlay",
                "modprobe br_netfilter",
                "printf 'net.bridge.bridge-nf-call-iptables = 1\\n"
                "net.bridge.bridge-nf-call-ip6tables = 1\\nnet.ipv4.ip_forward = 1\\n' "
                "> /etc/sysctl.d/99-kubernetes.conf",
                "sysctl --system",
                "export DEBIAN_FRONTEND=noninteractive",
                "apt-get update -y",
                "apt-get install -y apt-transport-https ca-certificates curl gpg containerd jq",
                "install -m 0755 -d /etc/apt/keyrings",
                f"curl -fsSL https://pkgs.k8s.io/core:/stable:/{minor}/deb/Release.key "
                "| gpg --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg",
                "echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] "
                f"https://pkgs.k8s.io/core:/stable:/{minor}/deb/ /' "
                "> /etc/apt/sources.list.d/kubernetes.list",
                "apt-get update -y",
                "PACKAGE=$(apt-cache madison kubeadm "
                f"| awk '$3 ~ /^{wanted}-/ {{print $3; exit}}')",
                'test -n "$PACKAGE"',
                'apt-get install -y kubelet="$PACKAGE" kubeadm="$PACKAGE" kubectl="$PACKAGE"',
                "apt-mark hold kubelet kubeadm kubectl",
                "mkdir -p /etc/containerd",
                "containerd config default > /etc/containerd/config.toml",
                "sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' "
                "/etc/containerd/config.toml",
                "systemctl restart containerd",
            ]
        )
        + "\n"
    )


def control_plane_endpoint_on_loopback() -> str:
    """With CPEM as VIP manager the API server's Elastic IP must be local before kubeadm."""
    return (
        "if ! ping -c 3 -q {{ .controlPlaneEndpoint }}; then "
        "ip addr add {{ .controlPlaneEndpoint }}/32 dev lo; fi"
    )


def cloud_config_secret(spec: ClusterSpec) -> dict[str, Any]:
    """The content of secret kube-system/metal-cloud-config that CPEM reads."""
    config: dict[str, Any] = {
        "apiKey": "{{ .apiKey }}",
        "projectID": spec.project_id,
        "eipTag": f"cluster-api-provider-packet:cluster-id:{spec.name}",
        "eipHealthCheckUseHostIP": True,
    }
    if spec.metallb_via_cpem:
        config["loadbalancer"] = METALLB_CPEM_URL
        config["metro"] = spec.metro
    return config


def control_plane_post_kubeadm(spec: ClusterSpec) -> str:
    secret = json.dumps(cloud_config_secret(spec), separators=(",", ":"))
    manifest = CPEM_MANIFEST.format(version=spec.cpem_version)
    return (
        "\n".join(
            [
                "#!/bin/bash",
                "set -euo pipefail",
                "printf 'auto lo:0\\niface lo:0 inet static\\n  address "
                "{{ .controlPlaneEndpoint }}\\n  netmask 255.255.255.255\\n' "
                ">> /etc/network/interfaces",
                "systemctl restart networking || true",
                'if [ -f "/run/kubeadm/kubeadm.yaml" ]; then',
                "  export KUBECONFIG=/etc/kubernetes/admin.conf",
                "  for attempt in 1 2 3; do",
                "    kubectl -n kube-system create secret generic metal-cloud-config "
                f"--from-literal=cloud-sa.json='{secret}' && break || sleep 2",
                "  done",
                f"  for attempt in 1 2 3; do kubectl apply -f {manifest} && break || sleep 2; done",
                "fi",
            ]
        )
        + "\n"
    )


def _meta(spec: ClusterSpec, name: str, *, cluster_object: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": spec.namespace}
    labels = dict(spec.labels or {})
    if labels:
        metadata["labels"] = labels
    if cluster_object and spec.annotations:
        metadata["annotations"] = dict(spec.annotations)
    return metadata


def _machine_template(spec: ClusterSpec, name: str, machine_type: str) -> dict[str, Any]:
    machine: dict[str, Any] = {
        "os": spec.node_os,
        "billingCycle": "hourly",
        "machineType": machine_type,
    }
    if spec.ssh_keys:
        machine["sshKeys"] = list(spec.ssh_keys)
    if spec.machine_tags:
        machine["tags"] = list(spec.machine_tags)
    return {
        "apiVersion": INFRASTRUCTURE_API,
        "kind": "PacketMachineTemplate",
        "metadata": _meta(spec, name),
        "spec": {"template": {"spec": machine}},
    }


def _script(path: str, content: str) -> dict[str, str]:
    return {"path": path, "owner": "root:root", "permissions": "0755", "content": content}


def _kubelet_args() -> dict[str, str]:
    return {"cloud-provider": "external", "provider-id": PROVIDER_ID}


def render_cluster(spec: ClusterSpec) -> list[dict[str, Any]]:
    """The workload cluster's objects, in the order they are applied."""
    name = spec.name
    control_plane = f"{name}-control-plane"
    workers = f"{name}-{WORKER_POOL}"
    pool_labels = {CAPI_CLUSTER_NAME_LABEL: name, "pool": WORKER_POOL}
    bootstrap = node_bootstrap(spec)
    return [
        {
            "apiVersion": CLUSTER_API,
            "kind": "Cluster",
            "metadata": _meta(spec, name, cluster_object=True),
            "spec": {
                "clusterNetwork": {
                    "pods": {"cidrBlocks": [spec.pod_cidr]},
                    "services": {"cidrBlocks": [spec.service_cidr]},
                },
                "infrastructureRef": {
                    "apiVersion": INFRASTRUCTURE_API,
                    "kind": "PacketCluster",
                    "name": name,
                },
                "controlPlaneRef": {
                    "apiVersion": CONTROL_PLANE_API,
                    "kind": "KubeadmControlPlane",
                    "name": control_plane,
                },
            },
        },
        {
            "apiVersion": INFRASTRUCTURE_API,
            "kind": "PacketCluster",
            "metadata": _meta(spec, name),
            "spec": {"projectID": spec.project_id, "metro": spec.metro, "vipManager": "CPEM"},
        },
        _machine_template(spec, control_plane, spec.control_plane_machine_type),
        {
            "apiVersion": CONTROL_PLANE_API,
            "kind": "KubeadmControlPlane",
            "metadata": _meta(spec, control_plane),
            "spec": {
                "version": spec.kubernetes_version,
                "replicas": spec.control_plane_count,
                "machineTemplate": {
                    "infrastructureRef": {
                        "apiVersion": INFRASTRUCTURE_API,
                        "kind": "PacketMachineTemplate",
                        "name": control_plane,
                    }
                },
                "kubeadmConfigSpec": {
                    "clusterConfiguration": {
                        "apiServer": {"extraArgs": {"cloud-provider": "external"}},
                        "controllerManager": {"extraArgs": {"cloud-provider": "external"}},
                    },
                    # No taints given: kubeadm keeps the control plane's NoSchedule taint, so
                    # the benchmark workloads run on the worker.
                    "initConfiguration": {
                        "nodeRegistration": {"kubeletExtraArgs": _kubelet_args()}
                    },
                    "joinConfiguration": {
                        "nodeRegistration": {
                            "ignorePreflightErrors": ["DirAvailable--etc-kubernetes-manifests"],
                            "kubeletExtraArgs": _kubelet_args(),
                        }
                    },
                    "files": [
                        _script(BOOTSTRAP_SCRIPT, bootstrap),
                        _script(CPEM_SCRIPT, control_plane_post_kubeadm(spec)),
                    ],
                    "preKubeadmCommands": [
                        f"bash {BOOTSTRAP_SCRIPT}",
                        control_plane_endpoint_on_loopback(),
                    ],
                    "postKubeadmCommands": [f"bash {CPEM_SCRIPT}"],
                },
            },
        },
        _machine_template(spec, workers, spec.worker_machine_type),
        {
            "apiVersion": BOOTSTRAP_API,
            "kind": "KubeadmConfigTemplate",
            "metadata": _meta(spec, workers),
            "spec": {
                "template": {
                    "spec": {
                        "joinConfiguration": {
                            "nodeRegistration": {"kubeletExtraArgs": _kubelet_args()}
                        },
                        "files": [_script(BOOTSTRAP_SCRIPT, bootstrap)],
                        "preKubeadmCommands": [f"bash {BOOTSTRAP_SCRIPT}"],
                    }
                }
            },
        },
        {
            "apiVersion": CLUSTER_API,
            "kind": "MachineDeployment",
            "metadata": {
                **_meta(spec, workers),
                "labels": {**(spec.labels or {}), **pool_labels},
            },
            "spec": {
                "clusterName": name,
                "replicas": spec.worker_count,
                "selector": {"matchLabels": dict(pool_labels)},
                "template": {
                    "metadata": {"labels": dict(pool_labels)},
                    "spec": {
                        "clusterName": name,
                        "version": spec.kubernetes_version,
                        "bootstrap": {
                            "configRef": {
                                "apiVersion": BOOTSTRAP_API,
                                "kind": "KubeadmConfigTemplate",
                                "name": workers,
                            }
                        },
                        "infrastructureRef": {
                            "apiVersion": INFRASTRUCTURE_API,
                            "kind": "PacketMachineTemplate",
                            "name": workers,
                        },
                    },
                },
            },
        },
    ]


def metallb_l2_config(addresses: list[str]) -> list[dict[str, Any]]:
    """MetalLB >= 0.13 layer-2 configuration: one address pool and its advertisement."""
    return [
        {
            "apiVersion": METALLB_API,
            "kind": "IPAddressPool",
            "metadata": {"name": METALLB_POOL, "namespace": METALLB_NAMESPACE},
            "spec": {"addresses": list(addresses)},
        },
        {
            "apiVersion": METALLB_API,
            "kind": "L2Advertisement",
            "metadata": {"name": METALLB_POOL, "namespace": METALLB_NAMESPACE},
            "spec": {"ipAddressPools": [METALLB_POOL]},
        },
    ]
