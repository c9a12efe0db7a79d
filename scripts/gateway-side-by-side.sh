#!/usr/bin/env bash
# Throughput of the JSON gateway (HTTP/1.1, keep-alive) of single-member servers side by
# side, in interleaved rounds, with wrk (Debian's package) as the load generator: puts,
# linearizable ranges and serializable ranges of one key, each for DURATION seconds.
#
#   scripts/gateway-side-by-side.sh NAME=BINARY [NAME=BINARY ...]
#
# A binary whose file name is `etcd` gets etcd's flags; any other gets oxcd's (the same
# ones). Environment: ROUNDS (default 3), DURATION (10), THREADS (2), CONNECTIONS (32),
# PORT (23790; PORT+10 is the peer port). Example:
#   scripts/gateway-side-by-side.sh oxcd=target/release/oxcd etcd=/usr/bin/etcd
set -euo pipefail

[ $# -ge 1 ] || { sed -n 2,11p "$0"; exit 2; }
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 2; }
rounds=${ROUNDS:-3}
duration=${DURATION:-10}
threads=${THREADS:-2}
connections=${CONNECTIONS:-32}
port=${PORT:-23790}
url="http://127.0.0.1:$port"
peer="http://127.0.0.1:$((port + 10))"
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true' EXIT

script() { # NAME PATH BODY
    cat > "$work/$1.lua" <<LUA
wrk.method = "POST"
wrk.path = "$2"
wrk.body = '$3'
wrk.headers["Content-Type"] = "application/json"
LUA
}
script put /v3/kv/put '{"key":"Zm9v","value":"YmFyYmFyYmFyYmFyYmFyYmFyYmFyYmFy"}'
script range /v3/kv/range '{"key":"Zm9v"}'
script serializable-range /v3/kv/range '{"key":"Zm9v","serializable":true}'

printf '%-8s %-6s %-19s %12s %10s %10s\n' round server workload "req/s" "p50" "p99"
for round in $(seq "$rounds"); do
    for pair in "$@"; do
        name=${pair%%=*}
        binary=${pair#*=}
        rm -rf "$work/data"
        "$binary" --name bench --data-dir "$work/data" \
            --listen-client-urls "$url" --advertise-client-urls "$url" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "bench=$peer" > "$work/$name.log" 2>&1 &
        server=$!
        sleep 0.2
        kill -0 "$server" 2>/dev/null || { echo "$name did not start (is port $port free?):" >&2; cat "$work/$name.log" >&2; exit 1; }
        for _ in $(seq 100); do
            curl -sf "$url/health" >/dev/null 2>&1 && break
            sleep 0.1
        done
        for workload in put range serializable-range; do
            out=$(wrk --latency -t "$threads" -c "$connections" -d "${duration}s" \
                -s "$work/$workload.lua" "$url")
            rate=$(sed -n 's/^Requests\/sec: *//p' <<<"$out")
            p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
            p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
            errors=$(sed -n 's/.*Non-2xx or 3xx responses: *//p' <<<"$out")
            printf '%-8s %-6s %-19s %12s %10s %10s %s\n' "$round" "$name" "$workload" \
                "$rate" "$p50" "$p99" "${errors:+non-2xx: $errors}"
        done
        kill "$server"
        wait "$server" 2>/dev/null || true
    done
done
