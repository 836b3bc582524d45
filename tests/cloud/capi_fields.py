"""The documented fields of the Cluster API kinds meshbench renders.

Transcribed from the API types (their json tags) of kubernetes-sigs/cluster-api v1.5.2
(``api/v1beta1``, ``controlplane/kubeadm/api/v1beta1``, ``bootstrap/kubeadm/api/v1beta1``)
and kubernetes-sigs/cluster-api-provider-packet v0.7.2 (``api/v1beta1``), the versions
mesh-recipes.md section 5 pins. Only the branches meshbench uses are spelled out; a key
ending in ``!`` is required (no ``omitempty``/``+optional``). These kinds are custom
resources, so kubernetes-validate has no schema for them: this is the check instead.
"""

from __future__ import annotations

from typing import Any

STR, INT, BOOL, MAP = str, int, bool, dict  # leaves: a Python type
ANY = object  # a subtree meshbench does not render (only its presence is allowed)

OBJECT_META = {"name!": STR, "namespace": STR, "labels": MAP, "annotations": MAP}
CAPI_OBJECT_META = {"labels": MAP, "annotations": MAP}  # clusterv1.ObjectMeta
OBJECT_REFERENCE = {
    "apiVersion": STR,
    "kind": STR,
    "name": STR,
    "namespace": STR,
    "uid": STR,
    "resourceVersion": STR,
    "fieldPath": STR,
}
NETWORK_RANGES = {"cidrBlocks!": [STR]}
CONTROL_PLANE_COMPONENT = {"extraArgs": MAP, "extraVolumes": ANY}
NODE_REGISTRATION = {
    "name": STR,
    "criSocket": STR,
    "taints": ANY,
    "kubeletExtraArgs": MAP,
    "ignorePreflightErrors": [STR],
    "imagePullPolicy": STR,
}
FILE = {
    "path!": STR,
    "owner": STR,
    "permissions": STR,
    "encoding": STR,
    "append": BOOL,
    "content": STR,
    "contentFrom": ANY,
}
KUBEADM_CONFIG_SPEC = {
    "clusterConfiguration": {
        "etcd": ANY,
        "networking": ANY,
        "kubernetesVersion": STR,
        "controlPlaneEndpoint": STR,
        "apiServer": {**CONTROL_PLANE_COMPONENT, "certSANs": [STR], "timeoutForControlPlane": STR},
        "controllerManager": CONTROL_PLANE_COMPONENT,
        "scheduler": CONTROL_PLANE_COMPONENT,
        "dns": ANY,
        "certificatesDir": STR,
        "imageRepository": STR,
        "featureGates": MAP,
        "clusterName": STR,
    },
    "initConfiguration": {
        "bootstrapTokens": ANY,
        "nodeRegistration": NODE_REGISTRATION,
        "localAPIEndpoint": ANY,
        "skipPhases": [STR],
        "patches": ANY,
    },
    "joinConfiguration": {
        "nodeRegistration": NODE_REGISTRATION,
        "caCertPath": STR,
        "discovery": ANY,
        "controlPlane": ANY,
        "skipPhases": [STR],
        "patches": ANY,
    },
    "files": [FILE],
    "diskSetup": ANY,
    "mounts": ANY,
    "preKubeadmCommands": [STR],
    "postKubeadmCommands": [STR],
    "users": ANY,
    "ntp": ANY,
    "format": STR,
    "verbosity": INT,
    "useExperimentalRetryJoin": BOOL,
    "ignition": ANY,
}
PACKET_MACHINE_SPEC = {
    "os!": STR,
    "billingCycle!": STR,
    "machineType!": STR,
    "sshKeys": [STR],
    "facility": STR,
    "metro": STR,
    "ipxeURL": STR,
    "hardwareReservationID": STR,
    "providerID": STR,
    "tags": [STR],
}

KINDS: dict[tuple[str, str], dict[str, Any]] = {
    ("cluster.x-k8s.io/v1beta1", "Cluster"): {
        "spec": {
            "paused": BOOL,
            "clusterNetwork": {
                "apiServerPort": INT,
                "services": NETWORK_RANGES,
                "pods": NETWORK_RANGES,
                "serviceDomain": STR,
            },
            "controlPlaneEndpoint": {"host!": STR, "port!": INT},
            "controlPlaneRef": OBJECT_REFERENCE,
            "infrastructureRef": OBJECT_REFERENCE,
            "topology": ANY,
        }
    },
    ("infrastructure.cluster.x-k8s.io/v1beta1", "PacketCluster"): {
        "spec": {
            "projectID!": STR,
            "facility": STR,
            "metro": STR,
            "controlPlaneEndpoint": {"host!": STR, "port!": INT},
            "vipManager!": ("CPEM", "KUBE_VIP"),  # +kubebuilder:validation:Enum
        }
    },
    ("infrastructure.cluster.x-k8s.io/v1beta1", "PacketMachineTemplate"): {
        "spec": {"template!": {"spec!": PACKET_MACHINE_SPEC}}
    },
    ("controlplane.cluster.x-k8s.io/v1beta1", "KubeadmControlPlane"): {
        "spec": {
            "replicas": INT,
            "version!": STR,
            "machineTemplate!": {
                "metadata": CAPI_OBJECT_META,
                "infrastructureRef!": OBJECT_REFERENCE,
                "nodeDrainTimeout": STR,
                "nodeVolumeDetachTimeout": STR,
                "nodeDeletionTimeout": STR,
            },
            "kubeadmConfigSpec!": KUBEADM_CONFIG_SPEC,
            "rolloutBefore": ANY,
            "rolloutAfter": STR,
            "rolloutStrategy": ANY,
            "remediationStrategy": ANY,
        }
    },
    ("bootstrap.cluster.x-k8s.io/v1beta1", "KubeadmConfigTemplate"): {
        "spec": {"template!": {"metadata": CAPI_OBJECT_META, "spec": KUBEADM_CONFIG_SPEC}}
    },
    ("cluster.x-k8s.io/v1beta1", "MachineDeployment"): {
        "spec": {
            "clusterName!": STR,
            "replicas": INT,
            "rolloutAfter": STR,
            "selector!": {"matchLabels": MAP, "matchExpressions": ANY},
            "template!": {
                "metadata": CAPI_OBJECT_META,
                "spec": {
                    "clusterName!": STR,
                    "bootstrap!": {"configRef": OBJECT_REFERENCE, "dataSecretName": STR},
                    "infrastructureRef!": OBJECT_REFERENCE,
                    "version": STR,
                    "providerID": STR,
                    "failureDomain": STR,
                    "nodeDrainTimeout": STR,
                    "nodeVolumeDetachTimeout": STR,
                    "nodeDeletionTimeout": STR,
                },
            },
            "strategy": ANY,
            "minReadySeconds": INT,
            "revisionHistoryLimit": INT,
            "paused": BOOL,
            "progressDeadlineSeconds": INT,
        }
    },
    # MetalLB v0.13+ (metallb.io/v1beta1, api/v1beta1 in metallb/metallb).
    ("metallb.io/v1beta1", "IPAddressPool"): {
        "spec": {
            "addresses!": [STR],
            "autoAssign": BOOL,
            "avoidBuggyIPs": BOOL,
            "serviceAllocation": ANY,
        }
    },
    ("metallb.io/v1beta1", "L2Advertisement"): {
        "spec": {
            "ipAddressPools": [STR],
            "ipAddressPoolSelectors": ANY,
            "nodeSelectors": ANY,
            "interfaces": [STR],
        }
    },
}


def check(document: dict[str, Any]) -> list[str]:
    """Every problem with ``document`` against its kind's documented fields."""
    key = (document.get("apiVersion"), document.get("kind"))
    if key not in KINDS:
        return [f"{key}: not a documented kind"]
    spec = {
        "apiVersion!": STR,
        "kind!": STR,
        "metadata!": OBJECT_META,
        **{f"{name}!": value for name, value in KINDS[key].items()},
    }
    return _check(document, spec, document.get("kind", "?"))


def _check(value: Any, spec: Any, path: str) -> list[str]:
    if spec is ANY:
        return []
    if isinstance(spec, tuple):
        return [] if value in spec else [f"{path}: {value!r} is not one of {spec}"]
    if isinstance(spec, type):
        return [] if isinstance(value, spec) else [f"{path}: expected {spec.__name__}"]
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [
            p for index, item in enumerate(value) for p in _check(item, spec[0], f"{path}[{index}]")
        ]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping"]
    fields = {name.rstrip("!"): inner for name, inner in spec.items()}
    required = {name.rstrip("!") for name in spec if name.endswith("!")}
    problems = [f"{path}.{name}: required field is missing" for name in required - set(value)]
    for name, inner in value.items():
        if name not in fields:
            problems.append(f"{path}.{name}: not a field of this kind")
        else:
            problems += _check(inner, fields[name], f"{path}.{name}")
    return problems
