"""The nginx configuration every environment serves, local and Kubernetes alike.

Why each setting:

- ``keepalive_requests`` high: nginx's default of 1000 closes the connection every 1000
  requests, and the reconnect (plus an mTLS handshake for L4 meshes) landed on the study's
  p99.9. One connection now lasts the whole run; ``SocketCount`` in the result shows it.
- a fixed response body of the size the study's nginx:1.23.3 welcome page had (615 bytes),
  generated here rather than read from the image, so every environment returns exactly the
  same bytes whatever nginx build serves them.
- ``access_log off``: logging each request costs CPU on the measured path, and the local
  environment's nginx must do the same work as the one in the cluster.
- ``worker_processes 1``: the load is one connection (c=1), which one worker serves; more
  workers only add scheduler noise.
"""

from __future__ import annotations

from dataclasses import dataclass

# The body size of nginx 1.23.3's default page, which the study's runs fetched.
DEFAULT_BODY_BYTES = 615
DEFAULT_KEEPALIVE_REQUESTS = 10_000_000
DEFAULT_KEEPALIVE_TIMEOUT_S = 300


def response_body(size: int = DEFAULT_BODY_BYTES) -> str:
    """A small HTML page of exactly ``size`` bytes (ASCII, no quotes or backslashes, so it
    can sit inside an nginx ``return`` string)."""
    head = "<!DOCTYPE html><html><head><title>meshbench</title></head><body><p>"
    tail = "</p></body></html>\n"
    filler = size - len(head) - len(tail)
    if filler < 0:
        raise ValueError(f"body size must be at least {len(head) + len(tail)} bytes")
    text = ("meshbench nginx response " * (filler // 25 + 1))[:filler]
    return head + text + tail


@dataclass(frozen=True)
class NginxSettings:
    """What varies between where nginx runs; everything else is fixed in the template."""

    listen: str = "80"  # "80", "198.18.0.2:8080", ...
    keepalive_requests: int = DEFAULT_KEEPALIVE_REQUESTS
    keepalive_timeout_s: int = DEFAULT_KEEPALIVE_TIMEOUT_S
    body_bytes: int = DEFAULT_BODY_BYTES
    # Where nginx writes its pid and temporary files; None keeps the image's defaults (the
    # container runs as its own root), a folder suits an unprivileged local instance.
    runtime_dir: str | None = None
    error_log: str = "stderr"


def render_nginx_conf(settings: NginxSettings = NginxSettings()) -> str:
    """The complete ``nginx.conf`` (a main configuration, not an include)."""
    body = response_body(settings.body_bytes).replace("\n", "\\n")
    runtime = ""
    http_paths = ""
    if settings.runtime_dir:
        folder = settings.runtime_dir.rstrip("/")
        runtime = f"pid {folder}/nginx.pid;\n"
        http_paths = "".join(
            f"    {name}_temp_path {folder}/{name}_temp;\n"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
    return (
        "# Rendered by meshbench.workloads.nginx; the same file serves every environment.\n"
        "worker_processes 1;\n"
        f"error_log {settings.error_log} warn;\n"
        f"{runtime}"
        "events {\n"
        "    worker_connections 1024;\n"
        "}\n"
        "http {\n"
        "    access_log off;\n"
        "    server_tokens off;\n"
        f"    keepalive_requests {settings.keepalive_requests};\n"
        f"    keepalive_timeout {settings.keepalive_timeout_s}s;\n"
        f"{http_paths}"
        "    server {\n"
        f"        listen {settings.listen};\n"
        "        location / {\n"
        "            default_type text/html;\n"
        f'            return 200 "{body}";\n'
        "        }\n"
        "    }\n"
        "}\n"
    )
