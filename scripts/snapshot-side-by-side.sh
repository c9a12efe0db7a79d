#!/usr/bin/env bash
# Snapshot save and restore of the same load, oxcd and etcd side by side on one machine:
# each server (single member, fresh data dir, loopback) takes TOTAL (1,000,000) puts of
# VALUE (256) bytes over as many possible keys from oxbench, then `etcdctl snapshot save`
# is timed (wall time, the server's peak memory during the save, the client's), the file's
# status printed, and its restore timed: `etcdctl snapshot restore` for etcd's file,
# `oxctl snapshot restore` for oxcd's (and for etcd's, the migration path).
#
#   scripts/snapshot-side-by-side.sh OXBENCH OXCD OXCTL ETCD
#
# Example: cargo build --release --bins &&
#   scripts/snapshot-side-by-side.sh target/release/oxbench target/release/oxcd \
#     target/release/oxctl /usr/bin/etcd
set -euo pipefail

[ $# -eq 4 ] || { sed -n 2,13p "$0"; exit 2; }
oxbench=$1 oxcd=$2 oxctl=$3 etcd=$4
total=${TOTAL:-1000000}
value=${VALUE:-256}
port=${PORT:-24890}
peer_port=$((port + 10))
work=$(mktemp -d)
server=""
cleanup() {
    [ -z "$server" ] || kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export ETCDCTL_API=3
ctl=(etcdctl --endpoints "127.0.0.1:$port" --command-timeout=600s)

timed() { # label, command...: prints the wall time and the command's peak memory
    local label=$1
    shift
    /usr/bin/time -f "$label: %e s wall, client peak %M KB" "$@" >"$work/out" 2>"$work/time" ||
        { cat "$work/out" "$work/time"; return 1; }
    tail -1 "$work/time"
}

for name in oxcd etcd; do
    binary=$oxcd
    [ "$name" = etcd ] && binary=$etcd
    "$binary" --data-dir "$work/$name.data" --name default \
        --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "default=http://127.0.0.1:$peer_port" \
        --quota-backend-bytes 8589934592 >"$work/$name.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do "${ctl[@]}" endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
    echo "== $name: $total puts of $value-byte values"
    "$oxbench" --endpoint "127.0.0.1:$port" --clients 64 --conns 8 --total "$total" \
        --key-space "$total" --key-size 16 --val-size "$value" put | tail -3
    # The server's peak memory from here on (writing 5 to clear_refs resets VmHWM).
    rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
    echo 5 >"/proc/$server/clear_refs"
    timed "$name snapshot save" "${ctl[@]}" snapshot save "$work/$name.db"
    echo "$name server: RSS $rss_before KB before the save, peak $(awk '/VmHWM/ {print $2}' "/proc/$server/status") KB during it"
    etcdctl snapshot status -w table "$work/$name.db"
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
done

echo "== restores"
timed "etcd file, etcdctl snapshot restore" etcdctl snapshot restore "$work/etcd.db" \
    --data-dir "$work/etcd.restored"
timed "oxcd file, oxctl snapshot restore" "$oxctl" snapshot restore "$work/oxcd.db" \
    --data-dir "$work/oxcd.restored"
timed "etcd file, oxctl snapshot restore" "$oxctl" snapshot restore "$work/etcd.db" \
    --data-dir "$work/migrated.restored"
du -sh "$work"/*.restored
