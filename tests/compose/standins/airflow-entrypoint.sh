#!/usr/bin/env bash
# The official image's entrypoint contract, reduced to what the compose stack uses:
# `bash ...` and `python ...` run as given, anything else is an `airflow` subcommand.
set -euo pipefail
case "${1:-}" in
  bash | python | python3) exec "$@" ;;
  airflow) shift ;;
esac
exec airflow "$@"
