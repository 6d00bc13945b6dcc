#!/usr/bin/env bash
# Container health probe that needs no curl: sends `GET <path>` to the server on this container's
# BACKEND_PORT and succeeds on a 200. `akr-healthcheck /health` (process up, the image's
# HEALTHCHECK) or `akr-healthcheck /ready` (database and cache reachable, for orchestrators).
set -eu
path="${1:-/health}"
port="${BACKEND_PORT:-8000}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "${path}" >&3
IFS= read -r -t 5 status <&3 || status=""
case "${status}" in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "unhealthy: GET ${path} answered ${status:-nothing}" >&2; exit 1 ;;
esac
