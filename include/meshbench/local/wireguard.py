"""The ``wireguard`` data plane: an L3 tunnel between the two namespaces (the shape of NSM
vl3's inter-node tunnel), with userspace wireguard-go because the kernel module is not
available on the build machines.
"""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from meshbench.local import binaries, netns

# wireguard-go's control sockets; this folder is the same in every network namespace.
SOCKET_DIR = Path("/var/run/wireguard")
DISCARD_PORT = 9


def generate_keypair() -> tuple[str, str]:
    """(private, public) in WireGuard's base64 form."""
    private = x25519.X25519PrivateKey.generate()
    private_raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public_raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(private_raw).decode(), base64.b64encode(public_raw).decode()


def socket_path(interface: str) -> Path:
    return SOCKET_DIR / f"{interface}.sock"


def daemon_command(interface: str) -> list[str]:
    # -f keeps it in the foreground: the recorded pid is the daemon itself.
    return [str(binaries.find("wireguard-go")), "-f", interface]


DAEMON_ENVIRONMENT = {"LOG_LEVEL": "error", "WG_PROCESS_FOREGROUND": "1"}


def wait_for_socket(interface: str, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if socket_path(interface).exists():
            return True
        time.sleep(0.05)
    return False


def configure(
    namespace: str,
    interface: str,
    private_key_file: Path,
    listen_port: int,
    peer_public_key: str,
    peer_inner_address: str,
    peer_endpoint: str,
    inner_cidr: str,
) -> None:
    wg = str(binaries.find("wg"))
    netns.run(
        [
            wg,
            "set",
            interface,
            "listen-port",
            str(listen_port),
            "private-key",
            str(private_key_file),
            "peer",
            peer_public_key,
            "allowed-ips",
            f"{peer_inner_address}/32",
            "endpoint",
            peer_endpoint,
        ],
        what=f"configuring WireGuard interface {interface} in {namespace}",
        namespace=namespace,
    )
    netns.add_address(namespace, interface, inner_cidr)


def latest_handshake(namespace: str, interface: str) -> int:
    """Seconds since the epoch of the last completed handshake; 0 when there was none."""
    output = netns.run(
        [str(binaries.find("wg")), "show", interface, "latest-handshakes"],
        what=f"reading WireGuard handshakes of {interface}",
        namespace=namespace,
    )
    stamps = [int(line.split()[1]) for line in output.splitlines() if len(line.split()) == 2]
    return max(stamps, default=0)


def send_handshake_trigger(namespace: str, peer_inner_address: str) -> None:
    """WireGuard handshakes on demand: one datagram into the tunnel starts it."""

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
            datagram.sendto(b"meshbench", (peer_inner_address, DISCARD_PORT))

    netns.call_in(namespace, send)
