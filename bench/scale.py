"""Scale benchmark: the prime's scheduler against N simulated nodes on one real etcd. As any
user, after `make prep` (needs the etcd binary; runs no containers):

    .venv/bin/python bench/scale.py [--nodes 10,500,2000,5000] [--jobs 3000] [--rounds 3] [--fleet process|thread]

For each N, against one etcd started for the run: register N nodes (nodes/<name> under one
shared lease: the leases are not what is measured), queue --jobs jobs through the real Jobs.add
(one txn each, 8 threads), then start the real Scheduler (prime-first, the default policy) on
node 0 and let a simulated fleet take the assignments: one watch on assign/ for all N nodes,
which reports each job's start and exit at once in one guarded txn per batch, as a real worker
does for a job that ends quickly.

The fleet runs in a process of its own by default (`--fleet process`), as nodes do: in the
scheduler's process (`--fleet thread`, how this was measured before) its JSON and gRPC work
takes the GIL from the scheduler, and the figure measures both together.

Columns: view load = the prime's one read of queue, nodes, drains and assignments when it starts
(O(N), once per election); assignments/s = jobs / time from the scheduler's start (load
included) until the last assignment was written; end-to-end jobs/s = jobs / time until the last
exit was written; txns/job = etcd write transactions per job (etcd's revision counter: each
write txn adds one; add + assign + finish, batched where several jobs are ready at once); key
writes/job = puts and deletes per job. Each N runs --rounds times, the Ns interleaved (10, 500,
..., 10, 500, ...) so that a busier moment of the machine does not fall on one N only; the row
shows the round with the median assignments/s and the range of all rounds. Last, the issue's
targets against the smallest and the largest N of the run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
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
from lclusterd.cluster.kv import Put  # noqa: E402
from lclusterd.cluster.scheduler import Scheduler  # noqa: E402
from lclusterd.cluster.store import Store  # noqa: E402
from lclusterd.cluster.watch import Callbacks, Watches  # noqa: E402
from lclusterd.model import ASSIGNED, EXITED, RUNNING, JobRecord, JobSpec, NodeInfo, new_job_id  # noqa: E402

TIMEOUT = 300.0  # seconds a run may take before it is reported unfinished


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
    """N simulated nodes: every assignment is reported started and exited(0) at once. Times are
    time.monotonic(), which is one clock for every process of the machine."""

    def __init__(self, store: CountingStore, keys: Keys, target: int):
        self.store, self.keys, self.jobs = store, keys, Jobs(store, keys)
        self.target = target
        self.assigned = 0
        self.finished = 0
        self.last_assigned = 0.0
        self.done_at = 0.0
        self.all_done = threading.Event()
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
                    self.last_assigned = time.monotonic()
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
                self.done_at = time.monotonic()
                self.all_done.set()

    def report(self) -> dict:
        return {"finished": self.all_done.is_set(), "last_assigned": self.last_assigned, "done_at": self.done_at,
                "key_writes": self.store.key_writes}

    def stop(self) -> None:
        self._watch.stop()


class FleetThread:
    """The fleet in the scheduler's process, sharing its GIL (`--fleet thread`)."""

    def __init__(self, endpoint: str, prefix: str, target: int, start_revision: int):
        self.fleet = Fleet(CountingStore(endpoint), Keys(prefix), target)
        self.fleet.start(start_revision)

    def wait(self) -> dict:
        self.fleet.all_done.wait(TIMEOUT)
        self.fleet.stop()
        report = self.fleet.report()
        self.fleet.store.close()
        return report


class FleetProcess:
    """The fleet in a process of its own (`--fleet process`): this script with --serve-fleet,
    which says "ready" once it watches and its report as one JSON line at the end."""

    def __init__(self, endpoint: str, prefix: str, target: int, start_revision: int):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-fleet", json.dumps([endpoint, prefix, target, start_revision])],
            stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the fleet process did not start")

    def wait(self) -> dict:
        try:
            out, _ = self.process.communicate(timeout=TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return json.loads(out.strip().splitlines()[-1]) if out.strip() else {"finished": False}


def serve_fleet(spec: str) -> None:
    endpoint, prefix, target, start_revision = json.loads(spec)
    fleet = Fleet(CountingStore(endpoint), Keys(prefix), target)
    fleet.start(start_revision)
    print("ready", flush=True)
    fleet.all_done.wait(TIMEOUT)
    fleet.stop()
    print(json.dumps(fleet.report()), flush=True)
    fleet.store.close()


def prepare(store: CountingStore, keys: Keys, n_nodes: int, n_jobs: int) -> tuple[int, list[str]]:
    """N registered nodes and the queued jobs; the shared lease and the node names."""
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
    return lease, names


def run_one(endpoint: str, n_nodes: int, n_jobs: int, fleet_kind: str = "process") -> dict:
    store = CountingStore(endpoint)
    keys = Keys(f"/scale-{n_nodes}-{time.monotonic_ns()}")
    lease, names = prepare(store, keys, n_nodes, n_jobs)
    rev0, writes0 = store.revision(), store.key_writes
    fleet = (FleetProcess if fleet_kind == "process" else FleetThread)(endpoint, keys.prefix, n_jobs, rev0 + 1)
    prime_rev = store.txn([], [Put(keys.prime, names[0].encode(), lease)]).revision
    scheduler = Scheduler(store, Watches(store), keys, Jobs(store, keys), names[0])
    load_time = timed(scheduler.view, "load")
    t0 = time.monotonic()
    scheduler.start(prime_rev)
    report = fleet.wait()
    scheduler.stop()
    rev1, writes1 = store.revision(), store.key_writes + report.get("key_writes", 0)
    store.revoke(lease)
    store.close()
    # the add txn of each job happened before rev0 (one per job, as Jobs.add writes it)
    return {
        "nodes": n_nodes, "jobs": n_jobs, "finished": report["finished"], "load_ms": 1000 * load_time[0],
        "assign_rate": n_jobs / (report["last_assigned"] - t0) if report["finished"] else 0.0,
        "e2e_rate": n_jobs / (report["done_at"] - t0) if report["finished"] else 0.0,
        "txns_per_job": 1 + (rev1 - rev0 - 1) / n_jobs,  # minus the prime key's own txn
        "key_writes_per_job": 3 + (writes1 - writes0 - 1) / n_jobs,  # add = record, queue key and listed/ key
    }


def timed(obj, name: str) -> list[float]:
    """Wrap obj.name to note how long its (one) call took, in the list returned."""
    took, call = [0.0], getattr(obj, name)

    def wrapper(*args, **kwargs):
        start = time.monotonic()
        try:
            return call(*args, **kwargs)
        finally:
            took[0] = time.monotonic() - start
    setattr(obj, name, wrapper)
    return took


def median_round(rounds: list[dict]) -> dict:
    """The round with the median assignments/s, with the range of all of them."""
    rates = sorted(r["assign_rate"] for r in rounds)
    row = dict(min(rounds, key=lambda r: abs(r["assign_rate"] - statistics.median_low(rates))))
    row["range"] = f"{rates[0]:.0f}-{rates[-1]:.0f}"
    row["finished"] = all(r["finished"] for r in rounds)
    return row


def print_table(rows: list[dict], fleet_kind: str) -> None:
    print(f"fleet: {'a process of its own' if fleet_kind == 'process' else 'threads in the scheduler process'}")
    print(f"{'nodes':>6} {'jobs':>6} {'view load ms':>13} {'assignments/s':>14} {'(rounds)':>11} "
          f"{'end-to-end jobs/s':>18} {'txns/job':>9} {'key writes/job':>15}")
    for r in rows:
        note = "" if r["finished"] else f"  (did not finish in {TIMEOUT:.0f} s)"
        print(f"{r['nodes']:>6} {r['jobs']:>6} {r['load_ms']:>13.0f} {r['assign_rate']:>14.0f} {r['range']:>11} "
              f"{r['e2e_rate']:>18.0f} {r['txns_per_job']:>9.2f} {r['key_writes_per_job']:>15.2f}{note}")
    small, large = min(rows, key=lambda r: r["nodes"]), max(rows, key=lambda r: r["nodes"])
    if large is not small and small["assign_rate"]:
        share = 100 * large["assign_rate"] / small["assign_rate"]
        print(f"at {large['nodes']} nodes: {share:.0f} % of the rate at {small['nodes']} (target >= 80 %), "
              f"{large['assign_rate']:.0f} assignments/s (target >= 4000); <= 4 etcd write txns per job")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-fleet":
        return serve_fleet(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="10,500,2000,5000", help="comma-separated N")
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per N, interleaved; the median is shown")
    parser.add_argument("--fleet", choices=("process", "thread"), default="process",
                        help="where the simulated nodes run (default: a process of their own)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",")]
    rounds: dict[int, list[dict]] = {n: [] for n in sizes}
    with tempfile.TemporaryDirectory(prefix="lclusterd-scale-") as work:
        etcd = EtcdProcess(Path(work))
        etcd.start()
        try:
            for _ in range(args.rounds):
                for n in sizes:
                    rounds[n].append(run_one(etcd.endpoint, n, args.jobs, args.fleet))
        finally:
            etcd.stop()
    print_table([median_round(rounds[n]) for n in sizes], args.fleet)


if __name__ == "__main__":
    main()
