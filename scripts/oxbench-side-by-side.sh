#!/usr/bin/env bash
# Throughput of several single-member servers side by side, in interleaved rounds on one
# machine (absolute numbers drift between runs on shared machines; rounds that alternate the
# servers keep the comparison fair). Each server runs alone, on a fresh data dir, on
# loopback; the same oxbench drives them all.
#
#   scripts/oxbench-side-by-side.sh OXBENCH NAME=BINARY [NAME=BINARY ...]
#
# A binary whose file name is `etcd` gets etcd's flags; any other gets oxcd's. Environment:
# ROUNDS (default 3), WORKLOADS (default "put range"; also txn-put, and connect, which opens
# CONNECT_TOTAL (500) connections one after another), CLIENTS (32),
# CONNS (4), TOTAL (20000), PORT (23790; PORT+10 is the peer port). TLS_DIR=DIR serves the
# clients over mutual TLS with the certificates scripts/make-test-certs.sh makes in DIR.
# AUTH=1 enables authentication on each server (etcdctl: user root, auth enable) and runs
# oxbench as root with a token (and the `authenticate` workload times logins).
#
# Example, oxcd at two commits and etcd 3.4:
#   scripts/oxbench-side-by-side.sh target/release/oxbench \
#     before=/tmp/before/oxcd after=target/release/oxcd etcd=/usr/bin/etcd
set -euo pipefail

[ $# -ge 2 ] || { sed -n 2,16p "$0"; exit 2; }
oxbench=$1
shift
rounds=${ROUNDS:-3}
workloads=${WORKLOADS:-put range}
port=${PORT:-23790}
peer_port=$((port + 10))
client_url="http://127.0.0.1:$port"
tls_server=()
tls_client=()
tls_ctl=()
if [ -n "${TLS_DIR:-}" ]; then
    client_url="https://127.0.0.1:$port"
    tls_server=(--cert-file "$TLS_DIR/server.crt" --key-file "$TLS_DIR/server.key"
        --trusted-ca-file "$TLS_DIR/ca.crt" --client-cert-auth)
    tls_client=(--cacert "$TLS_DIR/ca.crt" --cert "$TLS_DIR/client.crt" --key "$TLS_DIR/client.key")
    tls_ctl=(--cacert "$TLS_DIR/ca.crt" --cert "$TLS_DIR/client.crt" --key "$TLS_DIR/client.key")
fi
peer_url="http://127.0.0.1:$peer_port"

port_taken() { ss -ltn | grep -q ":$1 "; }

run_server() { # name binary
    local name=$1 binary=$2 dir
    dir=$(mktemp -d)
    if port_taken "$port" || port_taken "$peer_port"; then
        echo "port $port or $peer_port is taken; not measuring $name" >&2
        return 1
    fi
    local flags=(--data-dir "$dir/data" --listen-client-urls "$client_url"
        --advertise-client-urls "$client_url" --listen-peer-urls "$peer_url" "${tls_server[@]}")
    if [ "$(basename "$binary")" != etcd ]; then
        flags+=(--initial-advertise-peer-urls "$peer_url" --initial-cluster "default=$peer_url")
    fi
    # exec: the pid is the server's, so that the kill below stops it.
    (exec "$binary" "${flags[@]}" >"$dir/server.log" 2>&1) &
    local pid=$!
    sleep 3
    local auth_client=()
    if [ "${AUTH:-0}" = 1 ]; then
        local ctl=(env ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$port" "${tls_ctl[@]}")
        "${ctl[@]}" user add root:rootpw >/dev/null
        "${ctl[@]}" user grant-role root root >/dev/null
        "${ctl[@]}" auth enable >/dev/null
        auth_client=(--user root:rootpw)
    fi
    for workload in $workloads; do
        local result
        local total=${TOTAL:-20000}
        # A new connection per request: fewer of them.
        [ "$workload" = connect ] && total=${CONNECT_TOTAL:-500}
        [ "$workload" = authenticate ] && total=${AUTHENTICATE_TOTAL:-100}
        result=$("$oxbench" --endpoint "127.0.0.1:$port" --clients "${CLIENTS:-32}" \
            --conns "${CONNS:-4}" --total "$total" "${tls_client[@]}" "${auth_client[@]}" \
            "$workload" 2>&1 |
            grep -E 'Requests/sec|p99' | tr -s '\t\n' '  ')
        echo "$name $workload: $result"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
    sleep 1
}

for round in $(seq 1 "$rounds"); do
    echo "-- round $round"
    for pair in "$@"; do
        run_server "${pair%%=*}" "${pair#*=}"
    done
done
