"""A session of the etcd3gw client library (OpenStack's client of etcd's JSON gateway)
against one endpoint; prints what every call returned, for comparison between servers.

Usage: python etcd3gw_session.py HOST PORT
"""

import sys
import threading

import etcd3gw


def show(label, value):
    print(f"{label}: {value!r}")


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    client = etcd3gw.client(host=host, port=port, timeout=10)

    status = client.status()
    show("status version", status["version"])
    show("members", [(m["name"], m["peerURLs"]) for m in client.members()])

    show("put a", client.put("a", "1"))
    show("put b", client.put("b", "2"))
    show("put dir/x", client.put("dir/x", "x1"))
    show("put dir/y", client.put("dir/y", "y1"))
    show("get a", client.get("a"))
    show("get missing", client.get("missing"))
    show("get a with metadata", [
        (value, {k: meta[k] for k in ("key", "create_revision", "mod_revision", "version")})
        for value, meta in client.get("a", metadata=True)
    ])
    show("get_prefix dir/", [(v, m["key"]) for v, m in client.get_prefix("dir/")])
    show("get_all", sorted(v for v, _ in client.get_all()))
    show("get sorted by key desc", client.get_prefix("dir/", sort_order="descend", sort_target="key"))
    show("create a (exists)", client.create("a", "again"))
    show("create c", client.create("c", "3"))
    show("replace a 1->10", client.replace("a", "1", "10"))
    show("replace a 1->11 (stale)", client.replace("a", "1", "11"))
    show("get a", client.get("a"))
    show("delete b", client.delete("b"))
    show("delete b again", client.delete("b"))
    show("delete_prefix dir/", client.delete_prefix("dir/"))
    show("get_prefix dir/ after", client.get_prefix("dir/"))

    txn = client.transaction({
        "compare": [{"key": etcd3gw.utils._encode("a"), "result": "EQUAL", "target": "VALUE",
                     "value": etcd3gw.utils._encode("10")}],
        "success": [{"request_put": {"key": etcd3gw.utils._encode("t"),
                                     "value": etcd3gw.utils._encode("yes")}}],
        "failure": [],
    })
    show("txn succeeded", txn.get("succeeded"))
    show("get t", client.get("t"))

    lease = client.lease(ttl=60)
    show("lease ttl", 50 <= lease.ttl() <= 60)
    show("put leased", client.put("leased", "v", lease=lease))
    show("lease keys", lease.keys())
    show("lease refresh", 50 <= lease.refresh() <= 60)
    show("lease revoke", lease.revoke())
    show("get leased after revoke", client.get("leased"))

    lock = client.lock(id="oxlock", ttl=30)
    show("lock acquire", lock.acquire())
    show("lock is_acquired", lock.is_acquired())
    other = client.lock(id="oxlock", ttl=30)
    show("second lock acquire (held)", other.acquire())
    show("lock release", lock.release())
    show("second lock acquire (free)", other.acquire())
    show("second lock release", other.release())

    # A watch from the next revision sees the put that makes it, however late the watch
    # is established.
    seen = []
    revision = int(client.status()["header"]["revision"])
    events, cancel = client.watch("w", start_revision=revision + 1)
    def consume():
        for event in events:
            # A PUT's type is the enum's zero, which the gateway leaves out.
            seen.append((event.get("type", "PUT"), event["kv"]["key"], event["kv"]["value"]))
            break
    reader = threading.Thread(target=consume)
    reader.start()
    client.put("w", "watched")
    reader.join(timeout=10)
    cancel()
    show("watched", seen)
    show("watch_once timeout", repr(_watch_once_timeout(client)))


def _watch_once_timeout(client):
    try:
        return client.watch_once("never", timeout=1)
    except etcd3gw.exceptions.WatchTimedOut:
        return "timed out"


if __name__ == "__main__":
    main()
