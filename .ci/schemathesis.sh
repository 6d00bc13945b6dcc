#!/usr/bin/env bash
# The admin API against its own OpenAPI document: starts the built server (lightweight: a temp
# SQLite database, in-process cache, a known admin password and JWT secret), logs in, and runs a
# pinned schemathesis over every operation with all its checks (including positive-data
# acceptance and negative-data rejection), then stops the server. Any failed check fails CI.
#
# Usage: .ci/schemathesis.sh [path/to/app]   (default: $CARGO_TARGET_DIR or target, debug/app,
# as `cargo test --workspace --all-features --no-run` leaves it)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SERVER_BIN=$(realpath -m "${1:-$TARGET_DIR/debug/app}")
VENV=$(realpath -m "$TARGET_DIR/schemathesis-venv")
ADMIN_PASSWORD=schemathesis-admin-password
JWT_SECRET=schemathesis-jwt-secret-0123456789abcdef

if [ ! -x "$SERVER_BIN" ]; then
  echo "no server binary at $SERVER_BIN: build it first (cargo test --workspace --all-features --no-run)" >&2
  exit 1
fi
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
SERVER_PID=
stop() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap stop EXIT

# Only the variables this run needs, so a developer's .env or environment cannot change it.
(cd "$WORK" && exec env -i PATH="$PATH" \
  BACKEND_HOST=127.0.0.1 BACKEND_PORT="$PORT" WORKERS=1 LOG_LEVEL=warn \
  DATABASE_PATH="$WORK/schemathesis.db" \
  ADMIN_PASSWORD="$ADMIN_PASSWORD" JWT_SECRET="$JWT_SECRET" \
  GLOBAL_PROXY_KEYS=schemathesis-proxy-key \
  "$SERVER_BIN" >"$WORK/server.log" 2>&1) &
SERVER_PID=$!
for _ in $(seq 1 60); do
  if curl -fsS "$BASE/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    cat "$WORK/server.log" >&2
    echo "the server did not start" >&2
    exit 1
  fi
  sleep 0.5
done

TOKEN=$(curl -fsS -H 'Content-Type: application/json' \
  -d "{\"username\": \"admin\", \"password\": \"$ADMIN_PASSWORD\"}" "$BASE/admin/login" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')

# From the work directory, so schemathesis keeps its cache of failures out of the repository.
# `use_after_free` is left out: `DELETE /proxy-configs/{id}/keys` empties a pool, and the
# pool's (now empty) list rightly stays readable.
CONFIG_FILE=$(realpath .ci/schemathesis.toml)
(cd "$WORK" && "$VENV/bin/st" --config-file "$CONFIG_FILE" run "$BASE/admin/openapi.json" \
  -H "Authorization: Bearer $TOKEN" \
  --mode all -n 30 --generation-deterministic --exclude-checks use_after_free)
