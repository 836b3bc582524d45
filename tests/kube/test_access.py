"""Cluster access through real Airflow connections and the provider's KubernetesHook."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from meshbench.kube.access import (
    ClusterAccessError,
    ConnectionAccess,
    KubeconfigAccess,
    kubeconfig_file,
)

TOKEN = "access-test-token-0123456789"


def kubeconfig(ca_path: str = "ca.crt") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "a",
                "cluster": {"server": "https://127.0.0.1:7001", "certificate-authority": ca_path},
            },
            {
                "name": "b",
                "cluster": {"server": "https://127.0.0.1:7002", "insecure-skip-tls-verify": True},
            },
        ],
        "users": [{"name": "u", "user": {"token": TOKEN}}],
        "contexts": [
            {"name": "ctx-a", "context": {"cluster": "a", "user": "u"}},
            {"name": "ctx-b", "context": {"cluster": "b", "user": "u"}},
        ],
        "current-context": "ctx-a",
    }


def set_connection(monkeypatch, conn_id: str, extra: dict) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "kubernetes", "extra": extra})
    )


def test_kubeconfig_files_are_private_and_removed():
    with kubeconfig_file({"kind": "Config"}) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert yaml.safe_load(Path(path).read_text()) == {"kind": "Config"}
    assert not os.path.exists(path)


def test_inline_kubeconfig_with_context(monkeypatch):
    set_connection(
        monkeypatch,
        "mb_inline",
        {"kube_config": yaml.safe_dump(kubeconfig()), "cluster_context": "ctx-b"},
    )
    access = ConnectionAccess("server", "mb_inline")
    described = access.describe()
    assert described == {
        "role": "server",
        "conn_id": "mb_inline",
        "kubeconfig_source": "kube_config",
        "context": "ctx-b",
    }
    assert TOKEN not in json.dumps(described)
    with access.open() as path:
        written = yaml.safe_load(Path(path).read_text())
        assert written["current-context"] == "ctx-b"
        client = access.api_client(path)
        assert client.configuration.host == "https://127.0.0.1:7002"
    assert not os.path.exists(path)


def test_two_clusters_in_one_process_keep_their_own_settings(monkeypatch, tmp_path: Path):
    (tmp_path / "ca.crt").write_text("not a real certificate")
    document = yaml.safe_dump(kubeconfig(str(tmp_path / "ca.crt")))
    set_connection(monkeypatch, "mb_one", {"kube_config": document, "cluster_context": "ctx-b"})
    set_connection(monkeypatch, "mb_two", {"kube_config": document, "cluster_context": "ctx-a"})
    one, two = ConnectionAccess("client", "mb_one"), ConnectionAccess("server", "mb_two")
    with one.open() as path_one, two.open() as path_two:
        first = one.api_client(path_one)
        second = two.api_client(path_two)
    assert first.configuration.host == "https://127.0.0.1:7002"
    assert second.configuration.host == "https://127.0.0.1:7001"


def test_kubeconfig_path_resolves_relative_files(monkeypatch, tmp_path: Path):
    (tmp_path / "ca.crt").write_text("not a real certificate")
    source = tmp_path / "config"
    source.write_text(yaml.safe_dump(kubeconfig()))
    set_connection(monkeypatch, "mb_path", {"kube_config_path": str(source)})
    document = ConnectionAccess("client", "mb_path").kubeconfig()
    ca = document["clusters"][0]["cluster"]["certificate-authority"]
    assert ca == str(tmp_path / "ca.crt")


def test_unknown_context_lists_the_ones_there(monkeypatch):
    set_connection(
        monkeypatch,
        "mb_ctx",
        {"kube_config": yaml.safe_dump(kubeconfig()), "cluster_context": "nope"},
    )
    with pytest.raises(ClusterAccessError, match="no context 'nope'; it has: ctx-a, ctx-b"):
        ConnectionAccess("client", "mb_ctx").kubeconfig()


def test_a_connection_without_a_kubeconfig_is_refused(monkeypatch):
    set_connection(monkeypatch, "mb_empty", {"cluster_context": "x"})
    with pytest.raises(ClusterAccessError, match="must set exactly one of"):
        ConnectionAccess("client", "mb_empty").kubeconfig()


def test_a_missing_connection_is_named():
    with pytest.raises(ClusterAccessError, match="'mb_does_not_exist' is not usable"):
        ConnectionAccess("client", "mb_does_not_exist").kubeconfig()


def test_in_cluster_refers_to_the_service_account_files(monkeypatch):
    set_connection(monkeypatch, "mb_incluster", {"in_cluster": True})
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterAccessError, match="does not run in a pod"):
        ConnectionAccess("client", "mb_incluster").kubeconfig()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    document = ConnectionAccess("client", "mb_incluster").kubeconfig()
    assert document["clusters"][0]["cluster"]["server"] == "https://10.96.0.1:443"
    assert document["users"][0]["user"]["tokenFile"].endswith("serviceaccount/token")


def test_kubeconfig_access_for_generated_kubeconfigs():
    access = KubeconfigAccess("client", yaml.safe_dump(kubeconfig()), "a test", context="ctx-b")
    assert access.describe() == {
        "role": "client",
        "kubeconfig_source": "a test",
        "context": "ctx-b",
    }
    with access.open() as path:
        assert access.api_client(path).configuration.host == "https://127.0.0.1:7002"
