#!/usr/bin/env bash
# Installs the Debian packages meshbench needs when any is missing.
# Always --no-install-recommends: wireguard-tools would otherwise pull a kernel.
# PYTHON: the interpreter .venv is made from (default python3).
set -euo pipefail

PYTHON=${PYTHON:-python3}

# command-to-check:package
NEEDED=(
  "ensurepip:python3-venv"
  "initdb:postgresql"
  "nginx:nginx"
  "wrk:wrk"
  "h2load:nghttp2-client"
  "wireguard-go:wireguard-go"
  "wg:wireguard-tools"
  "ip:iproute2"
  "docker-compose:docker-compose"
  "chromium:chromium"
)

missing=()
for entry in "${NEEDED[@]}"; do
  cmd=${entry%%:*}; pkg=${entry#*:}
  if [ "$cmd" = ensurepip ]; then
    # Debian's python3 makes a virtualenv with pip only with python3-venv; pyenv's always can.
    "$PYTHON" -c "import ensurepip" >/dev/null 2>&1 && continue
  elif [ "$cmd" = initdb ]; then
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && continue
  elif [ "$cmd" = nginx ]; then
    [ -x /usr/sbin/nginx ] && continue
  elif command -v "$cmd" >/dev/null 2>&1; then
    continue
  fi
  missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "meshbench: installing system packages: ${missing[*]}"
if [ "$(id -u)" != 0 ]; then
  echo "meshbench: cannot install ${missing[*]}: not root. Install them with" >&2
  echo "  sudo apt-get install --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "meshbench: cannot install ${missing[*]}: no apt-get on this machine; install them with your package manager" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts nginx as a service on install; meshbench runs its own instances.
if printf '%s\n' "${missing[@]}" | grep -qx nginx; then
  (service nginx stop || true) >/dev/null 2>&1
fi
