"""Arrays and batches benchmark: one command, prints a table. Run as root after `make prep`:

    .venv/bin/python bench/arrays.py [--members 10000] [--e2e 2000] [--rounds 3]

(a) queue time: one Add of an array of --members `true` members (one RPC, chunks of 64
    members per etcd transaction) until it returns, the members durably QUEUED; and the same
    for a batch (`lclient -add -`) of as many lines. The node is drained meanwhile, so nothing
    runs beside the write (target: 10,000 members in at most 2 s).
(b) end to end: an array of --e2e `true` members on one node (--capacity, default 256), Add until
    Wait of the array returns (members/s; target at least 500/s), --rounds times, the median
    with the range; and etcd write transactions per member; then as many single jobs, queued
    in one batch and each waited for, beside it.
Slurm (b) is measured in the same run when `make bench-deps` has installed it: `sbatch
--array=0-(N-1) --wrap true` on a throwaway one-node Slurm (bench/slurm.py), submit -> queue
empty; else skipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from support.host import remove_cgroup_parent  # noqa: E402  (the tests' process helpers)
from support.processes import EtcdProcess, NodeProcess  # noqa: E402

from bench.slurm import SlurmError, one_node_slurm  # noqa: E402
from lclient.client import JobsClient, Target  # noqa: E402
from lclusterd.cluster.store import Store  # noqa: E402
from lclusterd.rpc import lclusterd_pb2 as pb  # noqa: E402

STATE_PARENT = Path("/var/lib/lclusterd")  # (as bench/cluster.py: not /tmp, see there)


def queue_times(client: JobsClient, n: int) -> tuple[float, float]:
    """Seconds for one Add of an n-member array, and of an n-job batch, on a drained node."""
    start = time.perf_counter()
    reply = client.add(pb.JobSpec(command="true"), array=pb.ArraySpec(first=0, last=n - 1))
    array = time.perf_counter() - start
    assert reply.job.member_count == n and reply.job.state == "QUEUED"
    start = time.perf_counter()
    jobs = client.add_batch([pb.JobSpec(command="true") for _ in range(n)])
    batch = time.perf_counter() - start
    assert len(jobs) == n
    return array, batch


def end_to_end(client: JobsClient, store: Store, n: int) -> tuple[float, float, float]:
    """(members/s, makespan, etcd write transactions per member) of an n-member `true` array."""
    before = store.revision()
    start = time.perf_counter()
    array = client.add(pb.JobSpec(command="true"), array=pb.ArraySpec(first=0, last=n - 1)).id
    done = client.wait(array, 600)
    makespan = time.perf_counter() - start
    assert done.state == "EXITED", (done.state, done.error)
    return n / makespan, makespan, (store.revision() - before) / n


def batch_end_to_end(client: JobsClient, n: int) -> tuple[float, float]:
    """(jobs/s, makespan) of n single `true` jobs queued in one batch: the same jobs without an array."""
    start = time.perf_counter()
    jobs = client.add_batch([pb.JobSpec(command="true") for _ in range(n)])
    states = [client.wait(job.id, 600).state for job in jobs]
    makespan = time.perf_counter() - start
    assert states.count("EXITED") == n, {s: states.count(s) for s in set(states)}
    return n / makespan, makespan


def slurm_array(n: int, timeout: float = 600) -> tuple[float, float] | None | str:
    """`sbatch --array=0-(n-1) --wrap true`, submit -> queue empty: (jobs/s, makespan); None if
    Slurm is not installed; a short note when it failed (details on stderr)."""
    try:
        with one_node_slurm() as slurm:
            if slurm is None:
                return None
            start = time.perf_counter()
            slurm.run("sbatch", "--parsable", "--oversubscribe", f"--array=0-{n - 1}", "--wrap", "true", "-o", "/dev/null")
            deadline = time.monotonic() + timeout
            while slurm.queued():
                if time.monotonic() > deadline:
                    raise SlurmError(f"Slurm array of {n} still queued after {timeout:.0f}s")
                time.sleep(0.2)
            makespan = time.perf_counter() - start
            return n / makespan, makespan
    except (SlurmError, OSError) as e:
        print(f"bench/arrays.py: Slurm: {e}", file=sys.stderr)
        return "failed (see stderr)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10000)
    parser.add_argument("--e2e", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=256, help="the nodes' --capacity (lclusterd's default: 256)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/arrays.py: run as root", file=sys.stderr)
        return 2
    STATE_PARENT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-arrays-", dir=STATE_PARENT))
    etcd = EtcdProcess(work)
    etcd.start()
    options = ["--capacity", str(args.capacity), "--log-level", "warning"]
    drained = NodeProcess(work / "queue", etcd.endpoint, "/bench-queue", "bench-queue", options)
    runner = NodeProcess(work / "run", etcd.endpoint, "/bench-run", "bench-run", options)
    store = Store(etcd.endpoint)
    rows = []
    try:
        drained.start()
        with JobsClient(Target(drained.socket), timeout=120) as client:
            client.drain(drained.name, True)
            client.add(pb.JobSpec(command="true"), array=pb.ArraySpec(first=0, last=63))  # warm up
            array, batch = queue_times(client, args.members)
        drained.stop()
        rows += [(f"queue {args.members} array members, one Add (s)", f"{array:.2f} ({args.members / array:.0f}/s)", "<= 2"),
                 (f"queue {args.members} jobs, -add - batch (s)", f"{batch:.2f} ({args.members / batch:.0f}/s)", "-")]
        runner.start()
        with JobsClient(Target(runner.socket), timeout=120) as client:
            end_to_end(client, store, 64)  # warm up
            rounds = sorted(end_to_end(client, store, args.e2e) for _ in range(max(1, args.rounds)))
            rows += array_rows(client, store, args.e2e, rounds, slurm=False)
            single_rate, single_makespan = batch_end_to_end(client, args.e2e)
        rows.append((f"the same as {args.e2e} single jobs, one -add - batch (jobs/s)",
                     f"{single_rate:.0f} (makespan {single_makespan:.2f}s)", "-"))
        rows += slurm_rows(args.e2e, rounds[len(rounds) // 2][0])
    finally:
        store.close()
        for node in (drained, runner):
            node.stop()
            remove_cgroup_parent(node.name)
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"lclusterd arrays, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, etcd plain http, load average {os.getloadavg()[0]:.1f}")
    print_rows(rows)
    return 0


def array_rows(client: JobsClient, store: Store, n: int, rounds: list[tuple[float, float, float]] | None = None,
               slurm: bool = True) -> list[tuple[str, str, str]]:
    """The table rows of an n-member array end to end (one run unless `rounds` are given), and
    with `slurm` those of sbatch --array beside it (bench/cluster.py's (e) too)."""
    rounds = rounds or [end_to_end(client, store, n)]
    rate, makespan, txns = rounds[len(rounds) // 2]
    rows = [(f"array of {n} x true, one node (members/s)",
             f"{rate:.0f} (makespan {makespan:.2f}s; {len(rounds)} rounds {rounds[0][0]:.0f}-{rounds[-1][0]:.0f})", ">= 500"),
            ("  etcd write txns per member", f"{txns:.2f}", "-")]
    return rows + (slurm_rows(n, rate) if slurm else [])


def slurm_rows(n: int, rate: float) -> list[tuple[str, str, str]]:
    slurm = slurm_array(n)
    if isinstance(slurm, tuple):
        return [(f"Slurm sbatch --array=0-{n - 1} (jobs/s)", f"{slurm[0]:.0f} (makespan {slurm[1]:.2f}s)", "-"),
                ("lclusterd / Slurm array throughput", f"{rate / slurm[0]:.1f}x", "-")]
    return [("Slurm sbatch --array (jobs/s)", slurm or "skipped (not installed)", "-")]


def print_rows(rows: list[tuple[str, str, str]]) -> None:
    """The benchmarks' table: measure, result, target."""
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':<32}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<32}  {target}")


if __name__ == "__main__":
    sys.exit(main())
