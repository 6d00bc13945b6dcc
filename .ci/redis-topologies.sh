#!/usr/bin/env bash
# Starts the Redis topologies the Cluster, Sentinel and TLS tests run against, on free loopback
# ports, with Debian's redis-server (a sentinel is `redis-server <conf> --sentinel`, which is all
# Debian's redis-sentinel package adds), every process under one directory:
#   - a Redis Cluster of 3 masters, each with one replica;
#   - a Sentinel set-up: one master, one replica, three sentinels watching them;
#   - a standalone Redis serving TLS only, with a certificate signed by a CA made here (openssl).
# Every data node requires the ACL user `akr` (the default user is switched off), so the URLs
# carry a username and password as managed services' do.
#
#   .ci/redis-topologies.sh start DIR   start everything under DIR, write DIR/env (export lines)
#   .ci/redis-topologies.sh stop DIR    stop what `start DIR` started (by the pids it recorded)
#   .ci/redis-topologies.sh run CMD...  start under a temporary directory, run CMD with the
#                                       TEST_REDIS_* variables exported, stop everything at exit
#
# Exports TEST_REDIS_CLUSTER_URL, TEST_REDIS_SENTINEL_URL, TEST_REDIS_TLS_URL and
# TEST_REDIS_TLS_CA_CERT_FILE.
set -euo pipefail

USER_NAME=akr
USER_PASSWORD="akr-$(date +%s)-$$"
SERVICE=akr-main

die() { echo "redis-topologies: $*" >&2; exit 1; }

# Picks a port nothing listens on, whose cluster-bus twin (port + 10000) is free too, and that
# this run has not handed out yet; stores it in the variable named $1.
TAKEN=" "
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local candidate
  for _ in $(seq 1 500); do
    # Below the kernel's ephemeral range (32768 and up by default) for the port and its cluster
    # bus port (+10000), so no outgoing connection of the tests can hold either.
    candidate=$((10000 + RANDOM % 12000))
    case "$TAKEN" in *" $candidate "* | *" $((candidate + 10000)) "*) continue ;; esac
    if ! listening "$candidate" && ! listening "$((candidate + 10000))"; then
      TAKEN="$TAKEN$candidate $((candidate + 10000)) "
      printf -v "$1" '%s' "$candidate"
      return 0
    fi
  done
  die "no free loopback port found"
}

cli() { redis-cli --no-auth-warning --user "$USER_NAME" --pass "$USER_PASSWORD" -h 127.0.0.1 "$@"; }

wait_until() {
  local what=$1; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what did not come up within 60 s (logs under $DIR)"
}

# The settings every data node shares: loopback only, no persistence, the ACL user, and the
# credentials replicas use to reach their master.
common_conf() {
  local port=$1 name=$2
  cat <<EOF
bind 127.0.0.1
port $port
daemonize yes
pidfile $DIR/$name.pid
logfile $DIR/$name.log
dir $DIR
dbfilename $name.rdb
save ""
appendonly no
enable-debug-command local
user default off
user $USER_NAME on >$USER_PASSWORD ~* &* +@all
masteruser $USER_NAME
masterauth $USER_PASSWORD
EOF
}

start_cluster() {
  local ports=() port nodes=()
  for i in 1 2 3 4 5 6; do
    free_port port
    ports+=("$port")
    {
      common_conf "$port" "cluster-$port"
      echo "cluster-enabled yes"
      echo "cluster-config-file $DIR/cluster-$port.nodes"
      # Short enough that the failover test measures seconds, long enough that a loaded CI
      # machine does not fail nodes over on its own.
      echo "cluster-node-timeout 3000"
    } >"$DIR/cluster-$port.conf"
    redis-server "$DIR/cluster-$port.conf"
    nodes+=("127.0.0.1:$port")
  done
  for port in "${ports[@]}"; do wait_until "cluster node $port" cli -p "$port" ping; done
  cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/cluster-create.log" 2>&1 \
    || die "redis-cli --cluster create failed: $(tail -5 "$DIR/cluster-create.log")"
  cluster_ready() {
    for port in "${ports[@]}"; do
      cli -p "$port" cluster info | grep -q 'cluster_state:ok' || return 1
    done
    # Every master has its replica attached.
    [ "$(cli -p "${ports[0]}" cluster nodes | grep -c 'slave')" = 3 ]
  }
  wait_until "the cluster" cluster_ready
  CLUSTER_URL="redis-cluster://$USER_NAME:$USER_PASSWORD@127.0.0.1:${ports[0]}?node=127.0.0.1:${ports[1]}&node=127.0.0.1:${ports[2]}"
}

start_sentinel() {
  local master replica port sentinels=()
  free_port master
  free_port replica
  common_conf "$master" "sentinel-master-$master" >"$DIR/sentinel-master-$master.conf"
  { common_conf "$replica" "sentinel-replica-$replica"; echo "replicaof 127.0.0.1 $master"; } \
    >"$DIR/sentinel-replica-$replica.conf"
  redis-server "$DIR/sentinel-master-$master.conf"
  redis-server "$DIR/sentinel-replica-$replica.conf"
  wait_until "the sentinel set-up's master" cli -p "$master" ping
  wait_until "the sentinel set-up's replica" sh -c \
    "redis-cli --no-auth-warning --user $USER_NAME --pass $USER_PASSWORD -p $replica info replication | grep -q 'master_link_status:up'"
  for i in 1 2 3; do
    free_port port
    sentinels+=("$port")
    cat >"$DIR/sentinel-$port.conf" <<EOF
bind 127.0.0.1
port $port
daemonize yes
pidfile $DIR/sentinel-$port.pid
logfile $DIR/sentinel-$port.log
dir $DIR
sentinel monitor $SERVICE 127.0.0.1 $master 2
sentinel auth-user $SERVICE $USER_NAME
sentinel auth-pass $SERVICE $USER_PASSWORD
sentinel down-after-milliseconds $SERVICE 3000
sentinel failover-timeout $SERVICE 10000
EOF
    redis-server "$DIR/sentinel-$port.conf" --sentinel
  done
  sentinel_ready() {
    for port in "${sentinels[@]}"; do
      redis-cli -h 127.0.0.1 -p "$port" sentinel ckquorum "$SERVICE" | grep -q '^OK' || return 1
      [ "$(redis-cli -h 127.0.0.1 -p "$port" sentinel replicas "$SERVICE" | grep -c '^name$')" -ge 1 ] || return 1
    done
  }
  wait_until "the sentinels" sentinel_ready
  SENTINEL_URL="redis-sentinel://$USER_NAME:$USER_PASSWORD@127.0.0.1:${sentinels[0]}/0?sentinelServiceName=$SERVICE&node=127.0.0.1:${sentinels[1]}&node=127.0.0.1:${sentinels[2]}"
}

start_tls() {
  local port tls="$DIR/tls"
  mkdir -p "$tls"
  free_port port
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=akr test CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tls/server.ext"
  openssl x509 -req -days 2 -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
    -CAcreateserial -extfile "$tls/server.ext" -out "$tls/server.crt" 2>/dev/null
  {
    common_conf 0 "tls-$port"
    echo "tls-port $port"
    echo "tls-cert-file $tls/server.crt"
    echo "tls-key-file $tls/server.key"
    echo "tls-ca-cert-file $tls/ca.crt"
    echo "tls-auth-clients no"
  } >"$DIR/tls-$port.conf"
  redis-server "$DIR/tls-$port.conf"
  wait_until "the TLS redis" cli --tls --cacert "$tls/ca.crt" -p "$port" ping
  TLS_URL="rediss://$USER_NAME:$USER_PASSWORD@127.0.0.1:$port/0"
  TLS_CA="$tls/ca.crt"
}

start() {
  command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"
  command -v openssl >/dev/null || die "openssl is not installed"
  redis-server --version | grep -q 'v=[7-9]' || die "Redis 7 or later is needed: $(redis-server --version)"
  mkdir -p "$DIR"
  start_cluster
  start_sentinel
  start_tls
  cat >"$DIR/env" <<EOF
export TEST_REDIS_CLUSTER_URL='$CLUSTER_URL'
export TEST_REDIS_SENTINEL_URL='$SENTINEL_URL'
export TEST_REDIS_TLS_URL='$TLS_URL'
export TEST_REDIS_TLS_CA_CERT_FILE='$TLS_CA'
EOF
  cat "$DIR/env"
}

stop() {
  local pid
  [ -d "$DIR" ] || return 0
  for pidfile in "$DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # Only a redis-server this script started: the pid file is ours and the process is Redis.
    if [ -n "$pid" ] && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
    fi
  done
  for pidfile in "$DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    for _ in $(seq 1 50); do
      [ -d "/proc/$pid" ] || break
      sleep 0.1
    done
  done
  rm -rf "$DIR"
}

case "${1:-}" in
  start) DIR=${2:?"usage: $0 start DIR"}; start ;;
  stop) DIR=${2:?"usage: $0 stop DIR"}; stop ;;
  run)
    shift
    [ $# -gt 0 ] || die "usage: $0 run COMMAND..."
    DIR=$(mktemp -d /tmp/akr-redis-topologies.XXXXXX)
    trap stop EXIT
    start >/dev/null
    # shellcheck disable=SC1091
    . "$DIR/env"
    "$@"
    ;;
  *) die "usage: $0 start DIR | stop DIR | run COMMAND..." ;;
esac
