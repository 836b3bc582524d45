"""How meshbench reaches a cluster: an Airflow connection, or a kubeconfig another step made.

A ``ClusterAccess`` gives two things for the length of one task: a kubeconfig file for the
CLIs (written 0600 to a temporary file, its current context set, removed afterwards) and a
Kubernetes API client built by the cncf-kubernetes provider's ``KubernetesHook``. Neither
is ever returned from a task or logged: ``describe()`` is the only part that leaves.

Heavy imports (the Kubernetes client, the Airflow provider) happen inside the methods so
that importing a backend opens nothing and stays fast.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from meshbench.backend import StepFailed

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# The service account files every pod gets; used for in-cluster access from the CLIs.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# kubeconfig fields that name files; relative paths resolve against the kubeconfig's folder.
_FILE_FIELDS = {
    "clusters": ("certificate-authority",),
    "users": ("client-certificate", "client-key", "tokenFile"),
}


class ClusterAccessError(StepFailed):
    """A cluster that cannot be reached with the access it was given."""


def select_context(kubeconfig: Mapping[str, Any], context: str | None) -> dict[str, Any]:
    """A copy of ``kubeconfig`` whose current context is ``context`` (checked to exist)."""
    document = copy.deepcopy(dict(kubeconfig))
    names = [entry.get("name") for entry in document.get("contexts") or []]
    if context:
        if context not in names:
            raise ClusterAccessError(
                f"kubeconfig has no context {context!r}; it has: {', '.join(map(str, names))}"
            )
        document["current-context"] = context
    elif not document.get("current-context"):
        if len(names) != 1:
            raise ClusterAccessError(
                "kubeconfig has no current-context and several contexts; set cluster_context"
            )
        document["current-context"] = names[0]
    return document


def _absolute_file_fields(document: dict[str, Any], base: Path) -> dict[str, Any]:
    for section, fields in _FILE_FIELDS.items():
        inner = "cluster" if section == "clusters" else "user"
        for entry in document.get(section) or []:
            body = entry.get(inner) or {}
            for name in fields:
                value = body.get(name)
                if isinstance(value, str) and value and not os.path.isabs(value):
                    body[name] = str((base / value).resolve())
    return document


def in_cluster_kubeconfig() -> dict[str, Any]:
    """A kubeconfig for the pod this runs in: it names the service account's token and CA
    files and holds no secret itself."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ClusterAccessError("in_cluster is set but this process does not run in a pod")
    if ":" in host:
        host = f"[{host}]"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "in-cluster",
                "cluster": {
                    "server": f"https://{host}:{port}",
                    "certificate-authority": str(SERVICE_ACCOUNT_DIR / "ca.crt"),
                },
            }
        ],
        "users": [
            {"name": "in-cluster", "user": {"tokenFile": str(SERVICE_ACCOUNT_DIR / "token")}}
        ],
        "contexts": [
            {"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "in-cluster"}}
        ],
        "current-context": "in-cluster",
    }


@contextlib.contextmanager
def kubeconfig_file(document: Mapping[str, Any]) -> Iterator[str]:
    """Write ``document`` to a 0600 temporary file, yield its path, remove it afterwards."""
    descriptor, path = tempfile.mkstemp(prefix="meshbench-kubeconfig-", suffix=".yaml")
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            yaml.safe_dump(dict(document), handle, sort_keys=False)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _fresh_configuration() -> Any:
    # Each hook fills its own Configuration, so two clusters in one process never share
    # the client library's process-wide default.
    from kubernetes.client import Configuration

    return Configuration()


class ClusterAccess(abc.ABC):
    """One cluster, seen from one task. ``role`` is "client", "server" or "management"."""

    def __init__(self, role: str) -> None:
        self.role = role

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """How this cluster is reached, without secrets (safe for XCom and the database)."""

    @abc.abstractmethod
    def kubeconfig(self) -> dict[str, Any]:
        """The kubeconfig document with its current context set. May hold credentials:
        write it only through :func:`kubeconfig_file`, never log or return it."""

    def api_client(self, kubeconfig_path: str) -> ApiClient:
        """An API client for this cluster, built through ``KubernetesHook`` from the
        kubeconfig file :meth:`open` wrote, with a client configuration of its own."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        hook = KubernetesHook(
            conn_id=None, config_file=kubeconfig_path, client_configuration=_fresh_configuration()
        )
        return hook.get_conn()

    @contextlib.contextmanager
    def open(self) -> Iterator[str]:
        """Yield the path of a 0600 kubeconfig file valid for the block, removed afterwards.
        Subclasses that need more files alive (cloud credential files) extend it."""
        with kubeconfig_file(self.kubeconfig()) as path:
            yield path


class ConnectionAccess(ClusterAccess):
    """A cluster given as an Airflow connection of type ``kubernetes``.

    The connection's extras follow the provider: exactly one of ``kube_config`` (the file's
    content), ``kube_config_path`` or ``in_cluster``, plus an optional ``cluster_context``.
    """

    def __init__(self, role: str, conn_id: str) -> None:
        super().__init__(role)
        self.conn_id = conn_id

    def describe(self) -> dict[str, Any]:
        extras = self._extras()
        if extras.get("in_cluster"):
            source = "in_cluster"
        elif extras.get("kube_config"):
            source = "kube_config"
        elif extras.get("kube_config_path"):
            source = "kube_config_path"
        else:
            source = "none"
        return {
            "role": self.role,
            "conn_id": self.conn_id,
            "kubeconfig_source": source,
            "context": extras.get("cluster_context"),
        }

    def _hook(self, client_configuration: Any = None) -> Any:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.conn_id, client_configuration=client_configuration)

    def _extras(self) -> dict[str, Any]:
        try:
            extras = dict(self._hook().conn_extras)
        except Exception as exc:  # AirflowNotFoundException and friends
            raise ClusterAccessError(
                f"{self.role} cluster: Airflow connection {self.conn_id!r} is not usable: {exc}"
            ) from None
        # The provider still reads the old prefixed names; accept both.
        prefix = "extra__kubernetes__"
        for key, value in list(extras.items()):
            if key.startswith(prefix):
                extras.setdefault(key.removeprefix(prefix), value)
        return {key: value for key, value in extras.items() if value not in (None, "")}

    def kubeconfig(self) -> dict[str, Any]:
        extras = self._extras()
        context = extras.get("cluster_context")
        chosen = [k for k in ("kube_config", "kube_config_path", "in_cluster") if extras.get(k)]
        if len(chosen) != 1:
            raise ClusterAccessError(
                f"{self.role} cluster: connection {self.conn_id!r} must set exactly one of "
                f"kube_config, kube_config_path, in_cluster "
                f"(it sets: {', '.join(chosen) or 'none'})"
            )
        if chosen[0] == "in_cluster":
            return in_cluster_kubeconfig()
        if chosen[0] == "kube_config":
            inline = extras["kube_config"]
            document = inline if isinstance(inline, dict) else yaml.safe_load(inline)
            base = Path.cwd()
        else:
            source = Path(str(extras["kube_config_path"])).expanduser()
            try:
                document = yaml.safe_load(source.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ClusterAccessError(
                    f"{self.role} cluster: cannot read kube_config_path {str(source)!r}: "
                    f"{exc.strerror}"
                ) from None
            base = source.parent
        if not isinstance(document, dict):
            raise ClusterAccessError(
                f"{self.role} cluster: connection {self.conn_id!r} holds no kubeconfig mapping"
            )
        return _absolute_file_fields(select_context(document, context), base)

    def api_client(self, kubeconfig_path: str) -> ApiClient:
        extras = self._extras()
        # The provider loads in-cluster settings into the library default, not into a
        # Configuration it is given, so only kubeconfig-based access gets its own one.
        configuration = None if extras.get("in_cluster") else _fresh_configuration()
        try:
            return self._hook(configuration).get_conn()
        except Exception as exc:
            raise ClusterAccessError(
                f"{self.role} cluster: cannot build a client from connection "
                f"{self.conn_id!r}: {exc}"
            ) from None


class KubeconfigAccess(ClusterAccess):
    """A cluster whose kubeconfig another step produced (an EKS hook, a Cluster API secret).

    ``source`` says where it came from, for the run record.
    """

    def __init__(
        self,
        role: str,
        kubeconfig: Mapping[str, Any] | str,
        source: str,
        context: str | None = None,
    ) -> None:
        super().__init__(role)
        document = yaml.safe_load(kubeconfig) if isinstance(kubeconfig, str) else kubeconfig
        if not isinstance(document, Mapping):
            raise ClusterAccessError(f"{role} cluster: kubeconfig from {source} is not a mapping")
        self._document = select_context(document, context)
        self.source = source

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "kubeconfig_source": self.source,
            "context": self._document.get("current-context"),
        }

    def kubeconfig(self) -> dict[str, Any]:
        return copy.deepcopy(self._document)
