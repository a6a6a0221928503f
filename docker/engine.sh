#!/usr/bin/env bash
# A private Docker engine for builds and container tests: its own socket, data root, exec root and
# pid file under one directory, so it never touches (or collides with) a system engine.
#
#   docker/engine.sh start DIR   start dockerd; prints `export DOCKER_HOST=unix://DIR/docker.sock`
#   docker/engine.sh stop DIR    stop the dockerd started with this DIR (by its pid file), wait for it
#   docker/engine.sh host DIR    print the DOCKER_HOST value for DIR
#
# Needs root (dockerd) and Debian's docker.io (`make docker-install`). `--iptables=false
# --bridge=none`: containers get host, none or container networks only, which is all the project
# uses (kfp.local.DockerRunner with network_mode=host reaches an MLflow server on 127.0.0.1).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [[ -z "$cmd" || -z "$dir" ]]; then
  echo "usage: $0 start|stop|host DIR" >&2
  exit 2
fi
sock="$dir/docker.sock"
pidfile="$dir/dockerd.pid"
host="unix://$sock"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "$cmd" in
  host)
    echo "$host"
    ;;
  start)
    if running; then
      echo "dockerd already running (pid $(cat "$pidfile"), $host)" >&2
    else
      command -v dockerd >/dev/null || {
        echo "dockerd not found: install Debian's docker.io (make docker-install)" >&2
        exit 1
      }
      mkdir -p "$dir/data" "$dir/exec"
      # The socket path must stay short (unix sockets: 108 bytes), so keep DIR short.
      nohup dockerd --host "$host" --data-root "$dir/data" --exec-root "$dir/exec" \
        --pidfile "$pidfile" --iptables=false --ip-masq=false --bridge=none \
        --storage-driver overlay2 >"$dir/dockerd.log" 2>&1 </dev/null &
      for _ in $(seq 1 120); do
        if DOCKER_HOST="$host" docker version >/dev/null 2>&1; then
          break
        fi
        sleep 0.5
      done
      if ! DOCKER_HOST="$host" docker version >/dev/null 2>&1; then
        echo "dockerd did not answer on $host within 60 s; its log:" >&2
        tail -n 30 "$dir/dockerd.log" >&2
        exit 1
      fi
      echo "dockerd started (pid $(cat "$pidfile"), $host)" >&2
    fi
    echo "export DOCKER_HOST=$host"
    ;;
  stop)
    if ! running; then
      echo "no dockerd running for $dir" >&2
      exit 0
    fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "dockerd (pid $pid) still running after 30 s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    # dockerd leaves its default network namespace bind-mounted under the exec root: unmount it, so
    # that DIR can be removed (CI removes it; `rm -rf` otherwise fails with "Device or resource busy")
    for ns in "$dir"/exec/netns/*; do
      [[ -e "$ns" ]] && { umount "$ns" 2>/dev/null || true; }
    done
    echo "dockerd stopped (pid $pid)" >&2
    ;;
  *)
    echo "usage: $0 start|stop|host DIR" >&2
    exit 2
    ;;
esac
