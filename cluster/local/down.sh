#!/usr/bin/env bash
# Stop the two-node cluster started by up.sh (same CLUSTER_DIR). Only its own
# processes are stopped: a `ray.init()` or another `ray start` on this machine keeps running.
set -euo pipefail
DIR="${CLUSTER_DIR:-/tmp/pareto-ray-cluster}"

running() {  # pid: still a node's `ray start --block` (not a reused pid)?
  kill -0 "$1" 2>/dev/null && ps -o args= -p "$1" | grep -q -- "start --block"
}

stop_node() {  # name
  local pidfile="$DIR/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  rm -f "$pidfile"
  if ! running "$pid"; then
    echo "the $1 node was not running"
  else
    kill -TERM "$pid"                       # `ray start --block` stops its node's processes on SIGTERM
    for _ in $(seq 1 60); do running "$pid" || break; sleep 0.5; done
    if running "$pid"; then
      echo "down.sh: the $1 node did not stop in 30 s; killing its process group" >&2
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    echo "stopped the $1 node"
  fi
}

stop_node worker
stop_node head
rm -f "$DIR/env"
