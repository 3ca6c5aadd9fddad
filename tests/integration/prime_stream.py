"""Issue 4's prime failover scenario, run on one etcd (test_multinode) and on a 3-member etcd
(test_etcd_faults): "kill -9 the prime in the middle of a stream of 300 jobs — every job reaches
exactly one terminal state, none is started twice except as a recorded retry, failover time
measured". Checked with the lclient library, the lclient executable and etcdctl.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from lclient.client import JobsClient
from lclusterd.rpc import lclusterd_pb2 as pb

from support.etcd_readers import etcd_prefix, etcd_records, prime_holder
from support.jobs import assert_stream_ended_once, check, nodes, until

STREAM = 300
KILL_AT = 100
PACE = 0.02  # seconds between two adds: about 50 a second, so the stream goes on through the failover
FAILOVER_LIMIT = 30.0  # seconds to wait for a new prime (a bound, not an assertion on speed)


def stream_with_prime_killed(cluster, etcd_label: str) -> str:
    """Run the scenario on `cluster` (daemons a, b, c; a the prime) and return the failover line
    to print. The adds and waits go through the lclient library, one gRPC channel per surviving
    daemon: 300 lclient processes would measure Python start-up on 2 cores, not the cluster."""
    a = cluster.daemon("a")
    b, c = cluster.daemon("b"), cluster.daemon("c")
    until(lambda: prime_holder(cluster) == "a", "a to hold the prime key")
    failover: dict[str, float] = {}

    def watch_prime(killed_at: float) -> None:
        while time.monotonic() < killed_at + FAILOVER_LIMIT:
            if prime_holder(cluster) in ("b", "c"):
                failover["seconds"] = time.monotonic() - killed_at
                return
            time.sleep(0.02)

    clients = (JobsClient(b.server), JobsClient(c.server))

    def add_one(i: int) -> str:
        return clients[i % 2].add(pb.JobSpec(command=f"sleep 0.{i % 10}; echo {i}", retries=1)).id

    watcher: threading.Thread | None = None
    killed_wall = 0.0
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = []
            for i in range(STREAM):
                if i == KILL_AT:
                    a.kill_hard()
                    killed_wall = time.time()
                    watcher = threading.Thread(target=watch_prime, args=(time.monotonic(),))
                    watcher.start()
                futures.append(pool.submit(add_one, i))
                time.sleep(PACE)
            ids = [f.result() for f in futures]  # an add that failed raises here
            finals = list(pool.map(lambda n_job: clients[n_job[0] % 2].wait(n_job[1], 120), enumerate(ids)))
    finally:
        for client in clients:
            client.close()
    assert watcher is not None
    watcher.join()
    assert len(set(ids)) == STREAM
    assert all(job.state == "EXITED" and job.exit_code == 0 for job in finals), [j.state for j in finals if j.state != "EXITED"]
    assert "seconds" in failover, f"no node took the prime key within {FAILOVER_LIMIT:g}s of the kill"

    in_etcd = etcd_records(cluster)
    after = [r["assigned_at"] for r in in_etcd.values() if (r.get("assigned_at") or 0) > killed_wall]
    retried = sum(1 for job in ids if in_etcd[job]["attempt"] > 1)
    assert retried, "no job was running on the prime when it was killed: the test proved nothing"
    assert_stream_ended_once(cluster.daemons, ids, in_etcd, lost_node="a")
    listed = c.lclient("-list", "-json")  # and once more through the lclient executable
    assert listed.returncode == 0, listed.stderr
    by_id = {j["id"]: j for j in map(json.loads, listed.stdout.splitlines())}
    assert all(by_id[job]["state"] == "EXITED" and by_id[job]["attempt"] == in_etcd[job]["attempt"] for job in ids)
    assert etcd_prefix(cluster, "queue") == {} and not [k for k in etcd_prefix(cluster, "assign") if "/assign/a/" in k]
    until(lambda: nodes(b)["a"]["state"] == "gone", "a to be listed as gone")

    a.start()  # same state dir: its start-up sweep removes what the crash left; nothing runs twice
    until(lambda: nodes(b)["a"]["state"] == "ready", "a to be back")
    assert all(check(a, job)["state"] == "EXITED" for job in ids[:5])
    return (f"prime failover, {STREAM} jobs, kill -9 of the prime after {KILL_AT} adds ({etcd_label}, lease TTL 2s): "
            f"another node held the prime key (read by etcdctl) after {failover['seconds']:.2f}s, first assignment "
            f"by it after {min(after) - killed_wall:.2f}s; {retried} job(s) lost with a and retried")
