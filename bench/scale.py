"""Scale benchmark: the prime's scheduler against N simulated nodes on one real etcd. As any
user, after `make prep` (needs the etcd binary; runs no containers):

    .venv/bin/python bench/scale.py [--nodes 10,100,500] [--jobs 3000]

For each N: register N nodes (nodes/<name> under one shared lease: the leases are not what is
measured), queue --jobs jobs through the real Jobs.add (one txn each, 8 threads), then start
the real Scheduler (prime-first, the default policy) on node 0 and let a simulated fleet take
the assignments: one watch on assign/ for all N nodes, which reports each job's start and exit
at once in one guarded txn per batch, as a real worker does for a job that ends quickly.

Columns: assignments/s = jobs / time from the scheduler's start until the last assignment was
written; end-to-end jobs/s = jobs / time until the last exit was written; txns/job = etcd write
transactions per job (etcd's revision counter: each write txn adds one; add + assign + finish,
batched where several jobs are ready at once); key writes/job = puts and deletes per job.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from support.processes import EtcdProcess  # noqa: E402  (the tests' etcd helper)

from lclusterd.cluster.jobs import Jobs  # noqa: E402
from lclusterd.cluster.keys import Keys  # noqa: E402
from lclusterd.cluster.scheduler import Scheduler  # noqa: E402
from lclusterd.cluster.kv import Put
from lclusterd.cluster.store import Store  # noqa: E402
from lclusterd.cluster.watch import Callbacks, Watches
from lclusterd.model import ASSIGNED, EXITED, RUNNING, JobRecord, JobSpec, NodeInfo, new_job_id  # noqa: E402


class CountingStore(Store):
    """A Store that counts the keys each transaction writes (puts and deletes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_writes = 0
        self._count_lock = threading.Lock()

    def txn(self, compares, ops, else_ops=()):
        result = super().txn(compares, ops, else_ops)
        if result.succeeded:
            with self._count_lock:
                self.key_writes += len(ops)
        return result


class Fleet:
    """N simulated nodes: every assignment is reported started and exited(0) at once."""

    def __init__(self, store: Store, keys: Keys, jobs: Jobs):
        self.store, self.keys, self.jobs = store, keys, jobs
        self.assigned = 0
        self.finished = 0
        self.last_assigned = 0.0
        self.all_done = threading.Event()
        self.target = 0
        self._pending: list[tuple[JobRecord, int]] = []
        self._cond = threading.Condition()
        self._writer = threading.Thread(target=self._write, daemon=True)

    def start(self, start_revision: int) -> None:
        self._watch = Watches(self.store).watch(self.keys.assign_all_prefix, start_revision,
                                                Callbacks(self._events, self.store.revision), "fleet")
        self._writer.start()

    def _events(self, events) -> None:
        with self._cond:
            for event in events:
                if event.kind != "put":
                    continue
                record = JobRecord.from_bytes(event.value, Keys.last(event.key))
                if record.state == ASSIGNED:
                    self._pending.append((record, event.mod_revision))
                    self.assigned += 1
                    self.last_assigned = time.perf_counter()
            self._cond.notify()

    def _write(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                batch, self._pending = self._pending[:200], self._pending[200:]
            now = time.time()
            changes = [self.jobs.finish(r.moved_to(RUNNING, host_pid=1, started_at=now).moved_to(EXITED, exit_code=0), rev)
                       for r, rev in batch]
            results = self.jobs.commit(changes)
            self.finished += sum(1 for v in results.values() if v is not None)
            if self.finished >= self.target:
                self.all_done.set()

    def stop(self) -> None:
        self._watch.stop()


def run_one(endpoint: str, n_nodes: int, n_jobs: int) -> dict:
    store = CountingStore(endpoint)
    keys = Keys(f"/scale-{n_nodes}-{time.monotonic_ns()}")
    jobs = Jobs(store, keys)
    lease = store.grant(60)
    capacity = max(4, math.ceil(2 * n_jobs / n_nodes))  # room for every job: placement, not slots, is measured
    names = [f"sim-{i:04d}" for i in range(n_nodes)]
    for start in range(0, n_nodes, 60):
        store.txn([], [Put(keys.node(n), NodeInfo(n, f"sim:{i}", capacity, memory_bytes=64 << 30).to_bytes(), lease)
                       for i, n in enumerate(names[start:start + 60], start)])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: jobs.add(JobRecord(id=new_job_id(), spec=JobSpec("true"), created_at=time.time())),
                      range(n_jobs)))
    fleet = Fleet(store, keys, jobs)
    fleet.target = n_jobs
    rev0, writes0 = store.revision(), store.key_writes
    fleet.start(rev0 + 1)
    prime_rev = store.txn([], [Put(keys.prime, names[0].encode(), lease)]).revision
    scheduler = Scheduler(store, Watches(store), keys, jobs, names[0])
    t0 = time.perf_counter()
    scheduler.start(prime_rev)
    finished = fleet.all_done.wait(300)
    t_end = time.perf_counter()
    scheduler.stop()
    fleet.stop()
    rev1, writes1 = store.revision(), store.key_writes
    store.revoke(lease)
    store.close()
    # the add txn of each job happened before rev0 (one per job, as Jobs.add writes it)
    txns = 1 + (rev1 - rev0 - 1) / n_jobs  # minus the prime key's own txn
    return {
        "nodes": n_nodes, "jobs": n_jobs, "finished": finished,
        "assign_rate": n_jobs / (fleet.last_assigned - t0),
        "e2e_rate": n_jobs / (t_end - t0),
        "txns_per_job": txns,
        "key_writes_per_job": 2 + (writes1 - writes0 - 1) / n_jobs,  # add = record + queue key
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="10,100,500", help="comma-separated N")
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lclusterd-scale-") as work:
        etcd = EtcdProcess(Path(work))
        etcd.start()
        try:
            rows = [run_one(etcd.endpoint, int(n), args.jobs) for n in args.nodes.split(",")]
        finally:
            etcd.stop()
    print(f"{'nodes':>6} {'jobs':>6} {'assignments/s':>14} {'end-to-end jobs/s':>18} {'txns/job':>9} {'key writes/job':>15}")
    for r in rows:
        note = "" if r["finished"] else "  (did not finish in 300 s)"
        print(f"{r['nodes']:>6} {r['jobs']:>6} {r['assign_rate']:>14.0f} {r['e2e_rate']:>18.0f} {r['txns_per_job']:>9.2f} "
              f"{r['key_writes_per_job']:>15.2f}{note}")
    print("target: >= 1000 assignments/s at N=500 and <= 4 etcd writes (txns) per job")


if __name__ == "__main__":
    main()
