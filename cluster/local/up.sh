#!/usr/bin/env bash
# Start a two-node Ray cluster on this machine: a head node and a worker node,
# each with its own CPUs, object store, temp dir and log, on loopback ports
# that leave Ray's defaults (6379, 8265, 10001, 52365) to a `ray.init()` next door.
#
#   cluster/local/up.sh                    # prints the dashboard address
#   source /tmp/pareto-ray-cluster/env     # RAY_ADDRESS + RAY_AUTH_MODE for `ray job submit`
#   cluster/local/down.sh
#
# Settings (environment, defaults in brackets): CLUSTER_DIR [/tmp/pareto-ray-cluster],
# CLUSTER_GCS_PORT [6390], CLUSTER_DASHBOARD_PORT [8275], CLUSTER_CLIENT_PORT [10011],
# CLUSTER_WORKER_PORTS [20000: 20000-20499 head, 20500-20999 worker],
# CLUSTER_HEAD_CPUS [1], CLUSTER_WORKER_CPUS [1], CLUSTER_HEAD_OBJECT_STORE and
# CLUSTER_WORKER_OBJECT_STORE [200000000 bytes each], RAY [.venv/bin/ray, else ray on PATH],
# RAY_AUTH_MODE [token; `disabled` turns authentication off on every node and client alike].
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${CLUSTER_DIR:-/tmp/pareto-ray-cluster}"
GCS_PORT="${CLUSTER_GCS_PORT:-6390}"
DASHBOARD_PORT="${CLUSTER_DASHBOARD_PORT:-8275}"
CLIENT_PORT="${CLUSTER_CLIENT_PORT:-10011}"
WORKER_PORTS="${CLUSTER_WORKER_PORTS:-20000}"
HEAD_CPUS="${CLUSTER_HEAD_CPUS:-1}"
WORKER_CPUS="${CLUSTER_WORKER_CPUS:-1}"
HEAD_OBJECT_STORE="${CLUSTER_HEAD_OBJECT_STORE:-200000000}"
WORKER_OBJECT_STORE="${CLUSTER_WORKER_OBJECT_STORE:-200000000}"
RAY="${RAY:-$REPO/.venv/bin/ray}"
[ -x "$RAY" ] || RAY="$(command -v ray)" || { echo "up.sh: no ray executable (make install, or set RAY=...)" >&2; exit 1; }
RAY="$(cd "$(dirname "$RAY")" && pwd)/$(basename "$RAY")"
PY="$(dirname "$RAY")/python"; [ -x "$PY" ] || PY=python3

# Every node, job and client must agree on the authentication mode (Ray >= 2.59
# turns token auth on by default for some launch paths only): set it explicitly.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [ "$RAY_AUTH_MODE" = token ]; then
  "$RAY" get-auth-token --generate >/dev/null 2>&1   # creates ~/.ray/auth_token once, unless RAY_AUTH_TOKEN(_PATH) is set
fi
# Jobs run `python ...` with the nodes' PATH: put the interpreter that has pareto-ray installed first.
export PATH="$(dirname "$RAY"):$PATH"
# SIGTERM to a node (down.sh) drains it first, by default for up to 30 s: not needed for a local cluster.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}"

mkdir -p "$DIR"
for node in head worker; do
  if [ -f "$DIR/$node.pid" ] && kill -0 "$(cat "$DIR/$node.pid")" 2>/dev/null; then
    echo "up.sh: a cluster is already running from $DIR (cluster/local/down.sh stops it)" >&2
    exit 1
  fi
done

# `ray start --block` stays in the foreground and owns its node's processes:
# SIGTERM to it stops exactly that node (down.sh), SIGKILL to it is a node crash.
start_node() {  # name, ray start args...
  local name="$1"; shift
  setsid "$RAY" start --block --disable-usage-stats --node-ip-address=127.0.0.1 --num-gpus=0 \
    --temp-dir="$DIR/$name" "$@" >"$DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$DIR/$name.pid"
}

node_exited() {  # name: true (and the log shown) if that node's `ray start` is gone
  if ! kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; then
    echo "up.sh: the $1 node exited; its log ($DIR/$1.log):" >&2; tail -n 30 "$DIR/$1.log" >&2
    return 0
  fi
  return 1
}

start_node head --head --port="$GCS_PORT" --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
  --ray-client-server-port="$CLIENT_PORT" --dashboard-agent-listen-port=$((DASHBOARD_PORT + 1)) \
  --min-worker-port="$WORKER_PORTS" --max-worker-port=$((WORKER_PORTS + 499)) \
  --num-cpus="$HEAD_CPUS" --object-store-memory="$HEAD_OBJECT_STORE"
for _ in $(seq 1 240); do  # the GCS port answers → the worker node can join
  (echo >"/dev/tcp/127.0.0.1/$GCS_PORT") 2>/dev/null && break
  node_exited head && exit 1
  sleep 0.5
done

start_node worker --address="127.0.0.1:$GCS_PORT" --dashboard-agent-listen-port=$((DASHBOARD_PORT + 2)) \
  --min-worker-port=$((WORKER_PORTS + 500)) --max-worker-port=$((WORKER_PORTS + 999)) \
  --num-cpus="$WORKER_CPUS" --object-store-memory="$WORKER_OBJECT_STORE"
# Both nodes alive, as the dashboard (which takes the jobs) reports them.
if ! "$PY" - "http://127.0.0.1:$DASHBOARD_PORT" <<'PY'
import sys
import time

from ray.util.state import list_nodes

deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if len(list_nodes(address=sys.argv[1], filters=[("state", "=", "ALIVE")])) >= 2:
            sys.exit(0)
    except Exception:  # the dashboard is still starting
        pass
    time.sleep(0.5)
sys.exit("up.sh: timed out waiting for both nodes to be alive")
PY
then
  node_exited head || node_exited worker || echo "up.sh: logs in $DIR" >&2
  exit 1
fi

cat >"$DIR/env" <<ENV
export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT
export RAY_AUTH_MODE=$RAY_AUTH_MODE
ENV
echo "Two-node Ray cluster up (head: $HEAD_CPUS CPU, worker: $WORKER_CPUS CPU; logs and pids in $DIR)."
echo "Dashboard and job submission address: http://127.0.0.1:$DASHBOARD_PORT"
echo "Submit a job:  source $DIR/env && ray job submit --working-dir . -- python jobs/train.py --config jobs/configs/quickstart.yaml"
