"""The Kubernetes API calls meshbench makes, behind one small interface.

``KubeApi`` is what the rest of the kube layer uses: server-side apply, get, list, delete
and the server version. ``DynamicKubeApi`` implements it with the official client's
dynamic client (discovery finds plurals and scopes, so custom resources work as soon as
their CRD is installed). Tests, with no cluster on the build machines, inject a fake that
implements the same interface (``meshbench.testing.fake_kube``).

Objects go in and come out as plain dicts: the same shape as the manifests meshbench
renders and as ``kubectl get -o json`` prints.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from meshbench.backend import StepFailed

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

FIELD_MANAGER = "meshbench"
# The kubelet's Summary API, read through the API server's node proxy.
SUMMARY_PATH = "stats/summary"


class KubeApiError(StepFailed):
    """An API call the server refused (other than "not found" where that is expected)."""


def object_name(manifest: Mapping[str, Any]) -> str:
    """``kind/namespace/name`` (or ``kind/name``) for messages and plans."""
    metadata = manifest.get("metadata") or {}
    namespace = metadata.get("namespace")
    name = metadata.get("name", "?")
    kind = str(manifest.get("kind", "?")).lower()
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


class KubeApi(Protocol):
    def server_version(self) -> str:
        """The API server's ``gitVersion``, e.g. ``v1.28.3``."""
        ...

    def apply(
        self, manifest: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER, force: bool = True
    ) -> dict[str, Any]:
        """Server-side apply: creates or updates; applying twice is not an error."""
        ...

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        ...

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]: ...

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Request deletion (background propagation); False when it was already gone."""
        ...

    def node_summary(self, node: str) -> dict[str, Any]:
        """The kubelet's Summary API document of ``node`` (``stats/summary`` through the
        API server's node proxy): cumulative CPU and current memory of the node, its pods
        and their containers."""
        ...


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


class DynamicKubeApi:
    """``KubeApi`` over ``kubernetes.dynamic.DynamicClient``."""

    def __init__(self, api_client: ApiClient, request_timeout: float = 60.0) -> None:
        self._api_client = api_client
        self._client: Any = None
        self._request_timeout = request_timeout
        self._cache_dir: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from kubernetes.dynamic import DynamicClient

            # A discovery cache of our own, removed on close: the library's default is one
            # shared file per API server in /tmp that outlives the task.
            self._cache_dir = tempfile.mkdtemp(prefix="meshbench-discovery-")
            self._client = DynamicClient(
                self._api_client, cache_file=os.path.join(self._cache_dir, "discovery.json")
            )
        return self._client

    def close(self) -> None:
        if self._cache_dir is not None:
            shutil.rmtree(self._cache_dir, ignore_errors=True)
            self._cache_dir = None
        self._client = None
        self._api_client.close()

    def _resource(self, api_version: str, kind: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self.client.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise KubeApiError(
                f"the API server does not serve {kind} in {api_version} (is its CRD installed?)"
            ) from None

    def server_version(self) -> str:
        from kubernetes.client import VersionApi

        info = VersionApi(self._api_client).get_code(_request_timeout=self._request_timeout)
        return str(info.git_version)

    def apply(
        self, manifest: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER, force: bool = True
    ) -> dict[str, Any]:
        from kubernetes.dynamic.exceptions import DynamicApiError

        resource = self._resource(str(manifest["apiVersion"]), str(manifest["kind"]))
        metadata = manifest.get("metadata") or {}
        try:
            applied = self.client.server_side_apply(
                resource,
                body=dict(manifest),
                name=metadata.get("name"),
                namespace=metadata.get("namespace"),
                field_manager=field_manager,
                # Sent as kubectl sends it; the server reads any value but "false"/"0" as true.
                force_conflicts="true" if force else "false",
                _request_timeout=self._request_timeout,
            )
        except DynamicApiError as exc:
            raise KubeApiError(
                f"apply {object_name(manifest)}: HTTP {_status(exc)}: {exc.summary()}"
            ) from None
        return applied.to_dict()

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = self._resource(api_version, kind)
        try:
            found = self.client.get(
                resource, name=name, namespace=namespace, _request_timeout=self._request_timeout
            )
        except NotFoundError:
            return None
        return found.to_dict()

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        resource = self._resource(api_version, kind)
        found = self.client.get(
            resource,
            namespace=namespace,
            label_selector=label_selector,
            _request_timeout=self._request_timeout,
        )
        return list(found.to_dict().get("items") or [])

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = self._resource(api_version, kind)
        try:
            self.client.delete(
                resource,
                name=name,
                namespace=namespace,
                propagation_policy="Background",
                _request_timeout=self._request_timeout,
            )
        except NotFoundError:
            return False
        return True

    def node_summary(self, node: str) -> dict[str, Any]:
        import json

        from kubernetes.client.exceptions import ApiException

        try:
            # Through call_api with the path spelled out: the generated proxy method quotes
            # the "/" of "stats/summary", and would parse the JSON body into a repr'd str.
            response = self._api_client.call_api(
                f"/api/v1/nodes/{{name}}/proxy/{SUMMARY_PATH}",
                "GET",
                path_params={"name": node},
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=self._request_timeout,
            )
        except ApiException as exc:
            raise KubeApiError(
                f"GET /api/v1/nodes/{node}/proxy/{SUMMARY_PATH}: HTTP {exc.status}: {exc.reason}"
            ) from None
        document = json.loads(response.data)
        if not isinstance(document, dict):
            raise KubeApiError(f"node {node}: the kubelet's summary is not a JSON object")
        return document
