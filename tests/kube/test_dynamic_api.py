"""``DynamicKubeApi`` on the wire, against a loopback server speaking the Kubernetes API.

The server implements just what the calls need (version, discovery, server-side apply,
get, list, delete) and records every request, so the test sees what a real API server
would receive: the apply content type, ``fieldManager`` and ``force``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from meshbench.kube.access import KubeconfigAccess
from meshbench.kube.api import DynamicKubeApi, KubeApiError

RESOURCES = {
    "/api/v1": [
        ("namespaces", "Namespace", False),
        ("services", "Service", True),
    ],
    "/apis/apps/v1": [("deployments", "Deployment", True)],
}


class FakeApiServer:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.forbidden: set[str] = set()
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def not_found(self, path: str) -> None:
                self.reply(
                    404,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": f"{path} not found",
                        "reason": "NotFound",
                        "code": 404,
                    },
                )

            def handle_any(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append(
                    {
                        "method": method,
                        "path": parts.path,
                        "query": parse_qs(parts.query),
                        "content_type": self.headers.get("Content-Type"),
                        "authorization": self.headers.get("Authorization"),
                    }
                )
                path = parts.path.rstrip("/") or "/"
                if path in fake.forbidden:
                    return self.reply(
                        403,
                        {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403},
                    )
                if path == "/version":
                    return self.reply(
                        200,
                        {
                            "major": "1",
                            "minor": "28",
                            "gitVersion": "v1.28.3",
                            "gitCommit": "x",
                            "gitTreeState": "clean",
                            "buildDate": "2023-10-18",
                            "goVersion": "go1.20",
                            "compiler": "gc",
                            "platform": "linux/amd64",
                        },
                    )
                if path == "/api":
                    return self.reply(200, {"kind": "APIVersions", "versions": ["v1"]})
                if path == "/apis":
                    version = {"groupVersion": "apps/v1", "version": "v1"}
                    return self.reply(
                        200,
                        {
                            "kind": "APIGroupList",
                            "groups": [
                                {"name": "apps", "versions": [version], "preferredVersion": version}
                            ],
                        },
                    )
                if path in RESOURCES:
                    return self.reply(
                        200,
                        {
                            "kind": "APIResourceList",
                            "groupVersion": path.rsplit("/", 2)[-2:][0]
                            if path.startswith("/apis")
                            else "v1",
                            "resources": [
                                {
                                    "name": name,
                                    "singularName": "",
                                    "namespaced": namespaced,
                                    "kind": kind,
                                    "verbs": ["get", "list", "patch", "delete"],
                                }
                                for name, kind, namespaced in RESOURCES[path]
                            ],
                        },
                    )
                if method == "PATCH":
                    document = yaml.safe_load(body)
                    fake.objects[path] = document
                    return self.reply(200, document)
                if method == "DELETE":
                    if fake.objects.pop(path, None) is None:
                        return self.not_found(path)
                    return self.reply(200, {"kind": "Status", "status": "Success"})
                if path in fake.objects:
                    return self.reply(200, fake.objects[path])
                listed = [obj for key, obj in fake.objects.items() if key.startswith(path + "/")]
                if listed or path.endswith(("/deployments", "/services", "/namespaces")):
                    return self.reply(
                        200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": listed}
                    )
                return self.not_found(path)

            def do_GET(self) -> None:
                self.handle_any("GET")

            def do_PATCH(self) -> None:
                self.handle_any("PATCH")

            def do_DELETE(self) -> None:
                self.handle_any("DELETE")

        return Handler


@pytest.fixture
def api_server():
    server = FakeApiServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def api(api_server: FakeApiServer):
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": api_server.url}}],
        "users": [{"name": "u", "user": {"token": "wire-test-token"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    access = KubeconfigAccess("server", kubeconfig, "a test")
    with access.open() as path:
        client = DynamicKubeApi(access.api_client(path))
        yield client
        client.close()


NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mb-1234abcd"}}
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "nginx", "namespace": "mb-1234abcd", "labels": {"app": "nginx"}},
    "spec": {"replicas": 1},
}


def test_server_side_apply_sends_an_apply_patch_with_manager_and_force(api, api_server):
    assert api.server_version() == "v1.28.3"
    api.apply(NAMESPACE)
    applied = api.apply(DEPLOYMENT)
    assert applied["metadata"]["name"] == "nginx"
    patches = [r for r in api_server.requests if r["method"] == "PATCH"]
    assert [r["path"] for r in patches] == [
        "/api/v1/namespaces/mb-1234abcd",
        "/apis/apps/v1/namespaces/mb-1234abcd/deployments/nginx",
    ]
    for request in patches:
        assert request["content_type"] == "application/apply-patch+yaml"
        assert request["query"] == {"fieldManager": ["meshbench"], "force": ["true"]}


def test_get_list_and_delete(api, api_server):
    api.apply(NAMESPACE)
    api.apply(DEPLOYMENT)
    assert api.get("apps/v1", "Deployment", "nginx", "mb-1234abcd")["spec"] == {"replicas": 1}
    assert api.get("apps/v1", "Deployment", "missing", "mb-1234abcd") is None
    listed = api.list("apps/v1", "Deployment", namespace="mb-1234abcd", label_selector="app=nginx")
    assert [item["metadata"]["name"] for item in listed] == ["nginx"]
    lists = [r for r in api_server.requests if r["path"].endswith("/deployments")]
    assert lists[-1]["query"]["labelSelector"] == ["app=nginx"]
    assert api.delete("v1", "Namespace", "mb-1234abcd") is True
    assert api.delete("v1", "Namespace", "mb-1234abcd") is False
    deletes = [r for r in api_server.requests if r["method"] == "DELETE"]
    assert deletes[0]["query"]["propagationPolicy"] == ["Background"]


def test_an_unserved_kind_is_a_clear_error(api):
    with pytest.raises(KubeApiError, match=r"does not serve Gateway in networking\.istio\.io"):
        api.get("networking.istio.io/v1beta1", "Gateway", "cross-network-gateway", "istio-system")


SUMMARY = {
    "node": {
        "nodeName": "ip-10-0-1-5",
        "cpu": {"time": "2026-12-07T10:00:00Z", "usageCoreNanoSeconds": 123456789000},
    },
    "pods": [
        {
            "podRef": {"name": "fortio-abc", "namespace": "mb-1234abcd"},
            "containers": [
                {
                    "name": "fortio",
                    "cpu": {"time": "2026-12-07T10:00:00Z", "usageCoreNanoSeconds": 5000000000},
                    "memory": {"workingSetBytes": 25165824},
                }
            ],
        }
    ],
}


def test_node_summary_is_read_through_the_node_proxy_with_the_path_unquoted(api, api_server):
    api_server.objects["/api/v1/nodes/ip-10-0-1-5/proxy/stats/summary"] = SUMMARY
    assert api.node_summary("ip-10-0-1-5") == SUMMARY
    request = api_server.requests[-1]
    assert (request["method"], request["path"]) == (
        "GET",
        "/api/v1/nodes/ip-10-0-1-5/proxy/stats/summary",
    )
    assert request["authorization"] == "Bearer wire-test-token"


def test_a_refused_node_summary_names_the_node_and_the_status(api, api_server):
    api_server.forbidden.add("/api/v1/nodes/ip-10-0-1-5/proxy/stats/summary")
    with pytest.raises(KubeApiError, match=r"nodes/ip-10-0-1-5/proxy/stats/summary: HTTP 403"):
        api.node_summary("ip-10-0-1-5")
