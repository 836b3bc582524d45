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

The provider is assembled from one module per concern: ``management`` (access and
credentials), ``providers`` (clusterctl init), ``clusters`` (the workload clusters'
manifests), ``create``, ``infrastructure`` (MetalLB), ``teardown`` (delete and reaper)
and ``provider`` (the tasks, the plan and ``build_backend``).
"""

from __future__ import annotations

from meshbench.environments.capi.infrastructure import CPEM_DEPLOYMENT
from meshbench.environments.capi.management import (
    ENVIRONMENT,
    KUBECONFIG_SECRET,
    MANAGEMENT,
    NODES_PER_CLUSTER,
    CapiWorkloadAccess,
    Credentials,
    read_credentials,
)
from meshbench.environments.capi.provider import CapiProvider, build_backend
from meshbench.environments.capi.providers import PROVIDER_API, PROVIDER_TYPES
from meshbench.environments.capi.teardown import MANAGED_SELECTOR

__all__ = [
    "CPEM_DEPLOYMENT",
    "ENVIRONMENT",
    "KUBECONFIG_SECRET",
    "MANAGED_SELECTOR",
    "MANAGEMENT",
    "NODES_PER_CLUSTER",
    "PROVIDER_API",
    "PROVIDER_TYPES",
    "CapiProvider",
    "CapiWorkloadAccess",
    "Credentials",
    "build_backend",
    "read_credentials",
]
