"""A stand-in ``kubectl`` for tests, run as a real subprocess through ``CommandRunner``.

``port-forward ... :PORT`` listens on a free 127.0.0.1 port, prints kubectl's
"Forwarding from 127.0.0.1:N -> PORT" line and relays each connection to the address in
``$MESHBENCH_FAKE_FORWARD_TO`` (a local fake Fortio), printing "Handling connection for N"
as kubectl does; with ``$MESHBENCH_FAKE_FORWARD_LIFETIME`` seconds set it then dies as
kubectl does when the pod goes away. Every other command is appended as one JSON line (argv, and the
KUBECONFIG it was given with that file's mode) to ``$MESHBENCH_FAKE_KUBECTL_LOG`` and exits
with ``$MESHBENCH_FAKE_KUBECTL_EXIT`` (default 0), or 1 when its first argument is
``$MESHBENCH_FAKE_KUBECTL_FAIL_VERB``.

``install(folder)`` writes an executable ``kubectl`` wrapper into ``folder`` and returns
its path, for ``CommandRunner(executables={"kubectl": path})``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import sys
import threading
from pathlib import Path


def install(folder: Path) -> str:
    path = Path(folder) / "kubectl"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m meshbench.testing.fake_kubectl "$@"\n')
    path.chmod(0o755)
    return str(path)


def _relay(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _port_forward(remote_port: str) -> int:
    host, _, port = os.environ["MESHBENCH_FAKE_FORWARD_TO"].rpartition(":")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    local_port = listener.getsockname()[1]
    print(f"Forwarding from 127.0.0.1:{local_port} -> {remote_port}", flush=True)
    print(f"Forwarding from [::1]:{local_port} -> {remote_port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    lifetime = os.environ.get("MESHBENCH_FAKE_FORWARD_LIFETIME")
    if lifetime:
        # The pod went away under the port-forward: kubectl reports it and exits.
        def die() -> None:
            print("error: lost connection to pod", flush=True)
            os._exit(1)

        threading.Timer(float(lifetime), die).start()
    while True:
        incoming, _ = listener.accept()
        print(f"Handling connection for {local_port}", flush=True)
        try:
            outgoing = socket.create_connection((host, int(port)))
        except OSError as exc:
            print(f"error forwarding port {remote_port}: {exc}", flush=True)
            incoming.close()
            continue
        threading.Thread(target=_relay, args=(incoming, outgoing), daemon=True).start()
        threading.Thread(target=_relay, args=(outgoing, incoming), daemon=True).start()


def main(argv: list[str]) -> int:
    if argv and argv[0] == "port-forward":
        return _port_forward(argv[-1].lstrip(":"))
    kubeconfig = os.environ.get("KUBECONFIG")
    mode = None
    if kubeconfig and os.path.exists(kubeconfig):
        mode = oct(stat.S_IMODE(os.stat(kubeconfig).st_mode))
    log = os.environ.get("MESHBENCH_FAKE_KUBECTL_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            entry = {"argv": argv, "kubeconfig": kubeconfig, "kubeconfig_mode": mode}
            handle.write(json.dumps(entry) + "\n")
    if argv[:1] == [os.environ.get("MESHBENCH_FAKE_KUBECTL_FAIL_VERB")]:
        print(f"error: {argv[0]} failed (MESHBENCH_FAKE_KUBECTL_FAIL_VERB)", file=sys.stderr)
        return 1
    return int(os.environ.get("MESHBENCH_FAKE_KUBECTL_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
