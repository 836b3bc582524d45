"""Generated configurations, names, certificates and process handling of the local
environment, without creating namespaces."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from meshbench.config import BENCHMARK_NETWORK, ConfigError, parse_config
from meshbench.local import binaries, envoy, nginx, pki, processes, topology
from meshbench.local.backend import LocalBackend
from tests.local.conftest import local_config

PRIVATE_RANGES = [
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
]


def test_nginx_body_is_the_size_of_nginx_default_page() -> None:
    body = nginx.fixed_body()
    assert len(body.encode()) == 615
    assert "'" not in body and "$" not in body  # nothing nginx would treat specially


def test_nginx_config_is_tuned_and_accepted_by_nginx(tmp_path: Path) -> None:
    config = nginx.render_config(tmp_path, "127.0.0.1:18080", "127.0.0.1:18081")
    assert "access_log off;" in config
    assert f"keepalive_requests {nginx.KEEPALIVE_REQUESTS};" in config
    assert "daemon off;" in config
    path = tmp_path / "nginx.conf"
    path.write_text(config)
    (tmp_path / "nginx-temp").mkdir()
    checked = subprocess.run(
        [
            str(binaries.find("nginx")),
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(path),
            "-e",
            str(tmp_path / "error.log"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_stub_status_parsing() -> None:
    page = (
        "Active connections: 2 \nserver accepts handled requests\n 17 17 90210 \n"
        "Reading: 0 Writing: 1 Waiting: 1 \n"
    )
    assert nginx.parse_stub_status(page) == {
        "active": 2,
        "accepts": 17,
        "handled": 17,
        "requests": 90210,
    }
    with pytest.raises(ValueError, match="stub_status"):
        nginx.parse_stub_status("<html>not it</html>")


@pytest.mark.parametrize("slug", ["abcd", "0123abcd", "abcdefghijkl"])
def test_netns_topology_stays_in_the_benchmarking_range(slug: str) -> None:
    plan = topology.plan_topology(f"mb-{slug}", "netns", BENCHMARK_NETWORK, "shared")
    for address in (
        plan.client_address,
        plan.server_address,
        plan.tunnel_client_address,
        plan.tunnel_server_address,
    ):
        parsed = ipaddress.ip_address(address)
        assert parsed in BENCHMARK_NETWORK
        assert not any(parsed in network for network in PRIVATE_RANGES)
    # Tunnel (inner) and link (outer) addresses never share a subnet.
    assert ipaddress.ip_address(plan.tunnel_server_address) not in ipaddress.ip_network(
        f"{plan.server_address}/{plan.underlay_prefix_length}", strict=False
    )
    for name in plan.interfaces:
        assert len(name) <= 15 and name.startswith("mb-")
    assert len(set(plan.interfaces)) == 4
    assert plan.namespaces == [f"mb-{slug}-client", f"mb-{slug}-server"]


def test_loopback_topology_uses_loopback_outside_127_0() -> None:
    plan = topology.plan_topology("mb-abcdef12", "loopback", BENCHMARK_NETWORK, "shared")
    for address in (plan.client_address, plan.server_address):
        parsed = ipaddress.ip_address(address)
        assert parsed.is_loopback
        assert parsed not in ipaddress.ip_network("127.0.0.0/16")
    assert plan.namespaces == []
    assert plan.direct_url.startswith(f"http://{plan.server_address}:")
    assert len(set(plan.ports.values())) == len(plan.ports)


def test_split_placement_puts_clusters_on_different_cpus() -> None:
    plan = topology.plan_topology("mb-abcd", "netns", BENCHMARK_NETWORK, "split")
    if len(os.sched_getaffinity(0)) < 2:
        assert plan.cpu_placement == "shared"  # recorded as what actually ran
    else:
        assert plan.cpus["client"] != plan.cpus["server"]


def test_local_settings_are_validated() -> None:
    text = Path(__file__).parents[2].joinpath("include/meshbench/benchmarks.yaml").read_text()
    with pytest.raises(ConfigError, match="cpu_placement"):
        parse_config(text.replace("cpu_placement: shared", "cpu_placement: everywhere"))
    with pytest.raises(ConfigError, match="subnet"):
        parse_config(text.replace("subnet: 198.18.0.0/15", "subnet: 10.0.0.0/16"))


def test_unknown_mesh_is_refused() -> None:
    with pytest.raises(ConfigError, match="istio"):
        LocalBackend(local_config(), "istio")


def test_workload_certificates_chain_to_the_run_ca() -> None:
    ca = pki.make_ca("mb-test")
    identity = pki.spiffe_id("mb-test", "server", "nginx")
    leaf = pki.issue_workload(ca, identity, ["nginx.example"])
    ca_certificate = x509.load_pem_x509_certificate(ca.certificate_pem)
    certificate = x509.load_pem_x509_certificate(leaf.certificate_pem)
    certificate.verify_directly_issued_by(ca_certificate)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [identity]
    other_ca = pki.make_ca("mb-other")
    with pytest.raises(ValueError):
        certificate.verify_directly_issued_by(
            x509.load_pem_x509_certificate(other_ca.certificate_pem)
        )


def test_envoy_configs_validate_with_envoy(tmp_path: Path) -> None:
    plan = topology.plan_topology("mb-abcd", "netns", BENCHMARK_NETWORK, "shared")
    ca = pki.make_ca(plan.prefix)
    files = {}
    for name, identity in (
        ("client", pki.spiffe_id(plan.prefix, "client", "wrk")),
        ("server", pki.spiffe_id(plan.prefix, "server", "nginx")),
    ):
        issued = pki.issue_workload(ca, identity, [])
        files[name] = (tmp_path / f"{name}.pem", tmp_path / f"{name}-key.pem")
        files[name][0].write_bytes(issued.certificate_pem)
        files[name][1].write_bytes(issued.private_key_pem)
    (tmp_path / "ca.pem").write_bytes(ca.certificate_pem)
    certificates = envoy.Certificates(
        ca=tmp_path / "ca.pem",
        client_certificate=files["client"][0],
        client_key=files["client"][1],
        server_certificate=files["server"][0],
        server_key=files["server"][1],
        client_identity=pki.spiffe_id(plan.prefix, "client", "wrk"),
        server_identity=pki.spiffe_id(plan.prefix, "server", "nginx"),
    )
    configs = {
        "client": envoy.client_sidecar_config(plan, certificates),
        "gateway": envoy.gateway_config(plan),
        "server": envoy.server_sidecar_config(plan, certificates),
    }
    assert configs["client"]["static_resources"]["clusters"][0]["transport_socket"]["typed_config"][
        "sni"
    ] == envoy.sni(plan)
    for name, config in configs.items():
        path = envoy.write_config(tmp_path / f"{name}.json", config)
        checked = subprocess.run(
            [str(binaries.envoy_path()), "--mode", "validate", "-c", str(path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert checked.returncode == 0, f"{name}: {checked.stdout[-2000:]}{checked.stderr}"


def test_stop_signals_only_the_recorded_process(tmp_path: Path) -> None:
    record = processes.start(
        "sleeper", ["/bin/sleep", "60"], cluster="client", log_path=tmp_path / "sleep.log"
    )
    try:
        assert record.is_running()
        assert record.members() == [record.pid]
        # Same pid, different start time: a reused pid, which teardown must leave alone.
        stranger = processes.ProcessRecord(
            **{**record.to_dict(), "start_ticks": record.start_ticks - 1}
        )
        assert not stranger.is_running()
        assert processes.stop(stranger) == []
        assert record.is_running()
        # Same pid and start time but another program: not ours either.
        other = processes.ProcessRecord(**{**record.to_dict(), "executable": sys.executable})
        assert processes.stop(other) == []
        assert record.is_running()
        assert processes.stop(record) == [record.pid]
        assert not record.is_running()
        assert processes.stop(record) == []  # already gone is fine
    finally:
        if record.is_running():
            os.kill(record.pid, 9)


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Runs a command as root without CAP_SYS_PTRACE, as in a default Docker container.
WITHOUT_PTRACE = ["setpriv", "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace"]
# Starts nginx, finds its members and stops it, all as root without CAP_SYS_PTRACE.
_NGINX_WITHOUT_PTRACE = """
import json, sys, time
from pathlib import Path
from meshbench.local import processes

def session_pids(session):
    return [stat.pid for stat in processes.session_members(session)]

argv, log_path, expected = json.loads(sys.argv[1])
record = processes.start("nginx", argv, cluster="server", log_path=Path(log_path))
deadline = time.monotonic() + 10
while len(session_pids(record.pid)) < expected and time.monotonic() < deadline:
    time.sleep(0.05)
everyone = session_pids(record.pid)
hidden = [pid for pid in everyone if processes.executable(pid) == processes.HIDDEN]
members = record.members()
stopped = processes.stop(record)
print(json.dumps({"leader": record.pid, "session": everyone, "hidden": hidden,
                  "members": members, "stopped": stopped, "left": session_pids(record.pid)}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="nginx's workers switch to nobody only under root")
def test_nginx_workers_are_found_and_stopped_where_root_cannot_read_their_program(
    tmp_path: Path,
) -> None:
    """Root without CAP_SYS_PTRACE (as in a default Docker container) may not read the
    program of nginx's workers, which run as nobody; they are members all the same, and
    stopping nginx stops them."""
    config = nginx.render_config(
        tmp_path, f"127.0.0.1:{_free_loopback_port()}", f"127.0.0.1:{_free_loopback_port()}"
    )
    (tmp_path / "nginx.conf").write_text(config)
    (tmp_path / "nginx-temp").mkdir()
    argv = [str(binaries.find("nginx")), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    arguments = [argv, str(tmp_path / "nginx.out"), 1 + nginx.WORKER_PROCESSES]
    checked = subprocess.run(
        [*WITHOUT_PTRACE, sys.executable, "-c", _NGINX_WITHOUT_PTRACE, json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    seen = json.loads(checked.stdout)
    workers = [pid for pid in seen["session"] if pid != seen["leader"]]
    assert len(workers) == nginx.WORKER_PROCESSES, (tmp_path / "nginx.out").read_text()
    assert seen["hidden"] == workers  # the situation this test is about
    assert seen["members"] == seen["session"]
    assert seen["stopped"] == seen["session"]
    assert seen["left"] == []


def test_missing_program_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(binaries, "_EXTRA_DIRS", ())
    with pytest.raises(
        binaries.MissingBinary, match="apt-get install --no-install-recommends wireguard-tools"
    ):
        binaries.find("wg")


@pytest.mark.parametrize("mesh", ["baseline", "envoy-mtls", "wireguard"])
def test_plan_describes_every_step_without_making_anything(mesh: str, tmp_path: Path) -> None:
    from meshbench.local import netns
    from tests.local.conftest import make_context, short_profile

    config = local_config(network_mode="netns")
    backend = LocalBackend(config, mesh, state_root=tmp_path)
    ctx = make_context(config, mesh, short_profile())
    before = netns.list_namespaces()
    plan = backend.plan(ctx)
    assert netns.list_namespaces() == before
    assert not backend.folder(ctx).exists()
    phases = [step.phase for step in plan.steps]
    assert phases[0] == "create_clusters" and phases[-1] == "delete_clusters"
    text = plan.render()
    assert f"ip netns add {ctx.resource_prefix}-client" in text
    assert "wrk" in text
    if mesh != "baseline":
        assert "paired baseline" in text
    if mesh == "envoy-mtls":
        assert text.count("--disable-hot-restart") == 3


def test_fractional_durations_fail_before_anything_is_made(tmp_path: Path) -> None:
    from meshbench.backend import StepFailed
    from tests.local.conftest import make_context, short_profile

    config = local_config(network_mode="loopback")
    backend = LocalBackend(config, "baseline", state_root=tmp_path)
    ctx = make_context(config, "baseline", short_profile(duration=2.5))
    with pytest.raises(StepFailed, match="whole seconds"):
        backend.create_clusters(ctx)
    assert not backend.folder(ctx).exists()
