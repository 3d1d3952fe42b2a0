#!/usr/bin/env bash
# A local dtx deployment without Docker: Redis (AOF always, noeviction),
# three dtx replicas, HAProxy in front of them (config/haproxy.cfg) and
# Prometheus scraping each replica (config/prometheus/), all on 127.0.0.1.
#
#   deploy/local.sh up       start what is not running; print the URLs once
#                            everything answers
#   deploy/local.sh status   what runs, with PIDs and ports (exit 3 if not all)
#   deploy/local.sh down     stop what `up` started, by PID, and nothing else
#
# Everything lives under one directory, $DEPLOY_DIR (default .deploy/ at the
# top of the repository): data, logs, PID files. Settings, from the
# environment:
#   DEPLOY_DIR          the directory
#   DEPLOY_DTX_BIN      the dtx binary (default target/release/dtx, built
#                       with cargo when missing)
#   DEPLOY_LB_PORT      HAProxy, dtm HTTP API          (default 36789)
#   DEPLOY_LB_GRPC_PORT HAProxy, gRPC API              (default 36790)
#   DEPLOY_STATS_PORT   HAProxy status page            (default 8404)
#   DEPLOY_PROM_PORT    Prometheus                     (default 9090)
#   DEPLOY_REDIS_PORT   Redis                          (default 6390)
#   DEPLOY_DTX_PORTS    the replicas' HTTP ports       (default "36801 36802 36803")
#   DEPLOY_GRPC_PORTS   the replicas' gRPC ports       (default "36811 36812 36813")
#   DEPLOY_SCRAPE_TOKEN the token Prometheus scrapes with (default: the first
#                       of DTX_AUTH_READ_TOKENS, if any)
# Every DTX_* variable set when `up` runs reaches the replicas (see
# config/default.toml), e.g. DTX_AUTH_TOKENS, DTX_AUTH_READ_TOKENS.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${DEPLOY_DIR:-$repo/.deploy}
lb_port=${DEPLOY_LB_PORT:-36789}
lb_grpc_port=${DEPLOY_LB_GRPC_PORT:-36790}
stats_port=${DEPLOY_STATS_PORT:-8404}
prom_port=${DEPLOY_PROM_PORT:-9090}
redis_port=${DEPLOY_REDIS_PORT:-6390}
read -r -a dtx_ports <<<"${DEPLOY_DTX_PORTS:-36801 36802 36803}"
read -r -a grpc_ports <<<"${DEPLOY_GRPC_PORTS:-36811 36812 36813}"
dtx_bin=${DEPLOY_DTX_BIN:-$repo/target/release/dtx}
if [ ${#dtx_ports[@]} -ne 3 ] || [ ${#grpc_ports[@]} -ne 3 ]; then
  echo "DEPLOY_DTX_PORTS and DEPLOY_GRPC_PORTS name three ports each" >&2
  exit 2
fi
replicas=(dtx1 dtx2 dtx3)
components=(dtx1 dtx2 dtx3 haproxy prometheus redis)

say() { echo "local.sh: $*" >&2; }

alive() { # pid: it runs (a zombie nobody reaped yet does not)
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $1}') || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

started() { # pid -> when it started (clock ticks since boot)
  # the fields after the command name, which may hold spaces, start after ')'
  local rest
  rest=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  awk '{print $20}' <<<"$rest"
}

pid_of() { # component -> its PID, if it runs and is the process we started
  local f="$dir/pids/$1.pid" pid since
  [ -f "$f" ] || return 1
  read -r pid since <"$f" || true
  [ -n "$pid" ] && alive "$pid" || return 1
  # a PID the system gave to another process since is not ours
  [ "$(started "$pid")" = "$since" ] || return 1
  echo "$pid"
}

wait_until() { # what, seconds, command...
  local what=$1 secs=$2
  shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      say "$what did not answer within ${secs} s; its log is under $dir/logs"
      return 1
    fi
    sleep 0.2
  done
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

install_missing() {
  local need=()
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v prometheus >/dev/null || need+=(prometheus)
  command -v curl >/dev/null || need+=(curl)
  [ ${#need[@]} -eq 0 ] && return 0
  say "installing ${need[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq "${need[@]}"
  # Debian's packages start their own services; this deployment runs its
  # own processes on its own ports and leaves those alone
}

start() { # component, command... : runs it in the background, logs, PID file
  local name=$1
  shift
  if pid_of "$name" >/dev/null; then
    return 0
  fi
  "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid $(started "$pid")" >"$dir/pids/$name.pid"
}

up() {
  install_missing
  if [ ! -x "$dtx_bin" ]; then
    say "building $dtx_bin"
    (cd "$repo" && cargo build --release --bin dtx)
  fi
  mkdir -p "$dir"/{pids,logs,redis,prometheus/targets,prometheus/data}

  start redis redis-server --port "$redis_port" --bind 127.0.0.1 \
    --dir "$dir/redis" --appendonly yes --appendfsync always \
    --maxmemory-policy noeviction --save "" --daemonize no
  wait_until redis 20 redis-cli -p "$redis_port" ping

  local i targets=()
  for i in 0 1 2; do
    # a replica's own settings go last, so no DTX_* of the caller moves it
    start "${replicas[$i]}" env \
      DTX_REDIS_URL="redis://127.0.0.1:$redis_port" \
      DTX_HTTP_DRAIN_DELAY_MS="${DTX_HTTP_DRAIN_DELAY_MS:-3000}" \
      DTX_HTTP_HOST=127.0.0.1 DTX_HTTP_PORT="${dtx_ports[$i]}" \
      DTX_GRPC_PORT="${grpc_ports[$i]}" \
      "$dtx_bin"
    targets+=("\"127.0.0.1:${dtx_ports[$i]}\"")
  done
  for i in 0 1 2; do
    wait_until "${replicas[$i]}" 30 http_ok "http://127.0.0.1:${dtx_ports[$i]}/readyz"
  done

  # Prometheus reads the repository's files through links, beside what
  # belongs to this deployment: its targets and its token
  ln -sf "$repo/config/prometheus/prometheus.yml" "$dir/prometheus/prometheus.yml"
  ln -sf "$repo/config/prometheus/alerts.yml" "$dir/prometheus/alerts.yml"
  local token=${DEPLOY_SCRAPE_TOKEN:-${DTX_AUTH_READ_TOKENS:-}}
  (umask 077 && printf '%s' "${token%%,*}" >"$dir/prometheus/scrape-token")
  local list
  list=$(IFS=,; echo "${targets[*]}")
  printf '[{"targets": [%s], "labels": {"deployment": "local"}}]\n' "$list" \
    >"$dir/prometheus/targets/local.json.tmp"
  mv "$dir/prometheus/targets/local.json.tmp" "$dir/prometheus/targets/local.json"
  start prometheus prometheus \
    --config.file="$dir/prometheus/prometheus.yml" \
    --storage.tsdb.path="$dir/prometheus/data" \
    --web.listen-address="127.0.0.1:$prom_port"
  wait_until prometheus 30 http_ok "http://127.0.0.1:$prom_port/-/ready"

  start haproxy env \
    LB_HTTP_BIND="127.0.0.1:$lb_port" LB_GRPC_BIND="127.0.0.1:$lb_grpc_port" \
    LB_STATS_BIND="127.0.0.1:$stats_port" HAPROXY_SOCKET="$dir/haproxy.sock" \
    DTX1_HTTP="127.0.0.1:${dtx_ports[0]}" DTX1_GRPC="127.0.0.1:${grpc_ports[0]}" \
    DTX2_HTTP="127.0.0.1:${dtx_ports[1]}" DTX2_GRPC="127.0.0.1:${grpc_ports[1]}" \
    DTX3_HTTP="127.0.0.1:${dtx_ports[2]}" DTX3_GRPC="127.0.0.1:${grpc_ports[2]}" \
    haproxy -db -f "$repo/config/haproxy.cfg"
  # up once the balancer has all three replicas in its pool
  wait_until haproxy 30 all_servers_up
  wait_until "the first scrape" 30 all_targets_up

  echo "dtx (HTTP):  http://127.0.0.1:$lb_port/api/dtmsvr   console: http://127.0.0.1:$lb_port/admin/"
  echo "dtx (gRPC):  127.0.0.1:$lb_grpc_port"
  echo "HAProxy:     http://127.0.0.1:$stats_port/"
  echo "Prometheus:  http://127.0.0.1:$prom_port/"
  echo "data:        $dir"
}

all_servers_up() {
  local csv
  csv=$(curl -fsS --max-time 2 "http://127.0.0.1:$stats_port/;csv") || return 1
  [ "$(grep -c '^dtx_http,dtx[123],.*,UP,' <<<"$csv")" -eq 3 ]
}

all_targets_up() {
  local t
  t=$(curl -fsS --max-time 2 "http://127.0.0.1:$prom_port/api/v1/targets?state=active") || return 1
  [ "$(grep -o '"health":"up"' <<<"$t" | wc -l)" -eq 3 ]
}

stop() { # components... : SIGTERM to each that runs, then wait for all
  local name pid pids=()
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$name:$pid")
    fi
  done
  local end=$((SECONDS + 30)) entry
  for entry in ${pids[@]+"${pids[@]}"}; do
    pid=${entry#*:}
    # a replica drains (http.drain_delay_ms, then its work in flight)
    while alive "$pid" && [ $SECONDS -lt $end ]; do sleep 0.1; done
    if alive "$pid"; then
      say "${entry%%:*} ($pid) did not stop within 30 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped ${entry%%:*} ($pid)"
  done
  for name in "$@"; do rm -f "$dir/pids/$name.pid"; done
}

down() {
  # replicas first (they drain through Redis), then the rest, Redis last
  stop dtx1 dtx2 dtx3
  stop haproxy prometheus
  stop redis
}

status() {
  local name pid all=0
  for name in "${components[@]}"; do
    if pid=$(pid_of "$name"); then
      printf '%-10s running  pid %s\n' "$name" "$pid"
    else
      printf '%-10s stopped\n' "$name"
      all=3
    fi
  done
  echo "data: $dir"
  return $all
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *)
    echo "usage: $0 up | down | status" >&2
    exit 2
    ;;
esac
