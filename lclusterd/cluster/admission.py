"""Admission: the one way a new job (or pool) gets into the cluster, and what a node checks
first, so that a job that could never run is refused at once with one line, not queued
forever, clamped or failed later.

A spec must be well formed (JobSpec.validate: every field within lclusterd.limits), and what
it asks for must fit a node of the cluster: its -mem within what some node offers its jobs,
its -pids within what a node allows all its jobs together, its -cpus within a node's cores,
its -image among the images some node publishes (NoNodeHasImage otherwise: never queued for an
image nobody has).
The node taking the request is asked first, from what it knows of itself; only a spec it
could not run itself costs a read of the other nodes' registrations.

A user (not an admin) may have at most --max-jobs-per-user jobs in etcd at once, any state,
ended ones until retention removes them (JobQuota, counted from this node's watch of jobs/):
one user cannot fill etcd, which every node needs to report its jobs. Counted as the watch has
told this node, so adds racing on several nodes may pass it by a few.

Then the job is written: on the prime, when the scheduler can place it at once (Placer.reserve),
straight to ASSIGNED in the add's own transaction; otherwise QUEUED for the prime to assign.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from lclusterd import metrics
from lclusterd import limits
from lclusterd.cluster import decode
from lclusterd.cluster.arrays import Arrays
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.pools import Pools
from lclusterd.cluster.placement import Needs, Placement
from lclusterd.errors import InvalidSpec, NoNodeHasImage, QuotaExceeded, RecordError
from lclusterd.model import JobRecord, JobSpec, NodeInfo, PoolRecord, new_job_id
from lclusterd.units import format_size


class Placer(Protocol):
    """Add-time placement: the scheduler (scheduler.py), which answers only while its node is
    the prime and nothing is queued."""

    def reserve(self, job_id: str, spec: JobSpec, owner: str = "") -> Placement | None: ...

    def settle(self, job_id: str, revision: int | None) -> None: ...


def fits(node: NodeInfo, spec: JobSpec) -> bool:
    """Whether `node` could ever run `spec` (0 in a node's field: it does not say, so it might)."""
    return not _shortfalls(node, spec)


def has_image(node: NodeInfo, spec: JobSpec) -> bool:
    """Whether `node` publishes the job's image ("": every node has its rootfs)."""
    return not spec.image or spec.image in node.images


def runs_image(node: NodeInfo, spec: JobSpec) -> bool:
    """Whether `node` has the job's image and, for a job without a command, the image has one."""
    return has_image(node, spec) and (bool(spec.command) or spec.image not in node.images_without_command)


def _shortfalls(node: NodeInfo, spec: JobSpec) -> list[str]:
    found = []
    if spec.memory_bytes is not None and node.memory_bytes and spec.memory_bytes > node.memory_bytes:
        found.append("memory")
    if spec.pids is not None and node.max_pids and spec.pids > node.max_pids:
        found.append("pids")
    if spec.cpus is not None and node.cores and spec.cpus > node.cores:
        found.append("cpus")
    needs = Needs.of(spec)
    if needs is not None and not needs.met_by(node.subnet, node.volume_roots):
        found.append("offer")
    return found


class JobQuota:
    """At most `limit` jobs stored per owner (0: no limit); `stored(owner)` counts theirs."""

    def __init__(self, limit: int, stored: Callable[[str], int]):
        self.limit, self.stored = limit, stored

    def check(self, owner: str, adding: int) -> None:
        if not self.limit:
            return
        have = self.stored(owner)
        if have + adding > self.limit:
            metrics.quota_refused()
            raise QuotaExceeded(f"user {owner} has {have} jobs in the cluster (queued, running, or ended and kept for "
                                f"--keep) and may have at most {self.limit} (--max-jobs-per-user): this add of "
                                f"{adding} would pass it; wait for jobs to end and be removed, or ask an admin")


NO_QUOTA = JobQuota(0, lambda _owner: 0)


class Admission:
    def __init__(self, jobs: Jobs, me: NodeInfo, placer: Placer, quota: JobQuota = NO_QUOTA):
        self.quota = quota
        self.jobs = jobs
        self.pools = Pools(jobs)
        self.arrays = Arrays(jobs)
        self.store = jobs.store
        self.keys: Keys = jobs.keys
        self.me = me
        self.placer = placer

    def add(self, spec: JobSpec, owner: str, unlimited: bool = False) -> JobRecord:
        """Admit and write `owner`'s job; its record as written (QUEUED, or ASSIGNED when placed now).
        `unlimited`: an admin's, not held to the quota (as in every add below)."""
        started = time.perf_counter()
        self._count(owner, 1, unlimited)
        record = self._add(spec, owner)
        metrics.job_submitted(1, time.perf_counter() - started)
        return record

    def _add(self, spec: JobSpec, owner: str) -> JobRecord:
        self.check(spec)
        record = JobRecord(id=new_job_id(), spec=spec, created_at=self.jobs.added_at(), owner=owner)
        # a job with -after waits in the queue for its parents (the scheduler checks them)
        placement = self.placer.reserve(record.id, spec, owner) if not spec.after else None
        if placement is not None:
            revision = None
            try:
                assigned, revision = self.jobs.add_assigned(record, placement.node, placement.guard)
            finally:
                self.placer.settle(record.id, revision)
            if revision is not None:
                return assigned
        return self.jobs.add(record)

    def add_pool(self, spec: JobSpec, owner: str, unlimited: bool = False) -> tuple[PoolRecord, list[JobRecord]]:
        """Admit and write `owner`'s pool: one member per ready node (pools.py)."""
        started = time.perf_counter()
        self._count(owner, 1, unlimited)  # its members are counted once made
        self.check(spec)
        pool, members = self.pools.add(spec, owner)
        metrics.job_submitted(len(members), time.perf_counter() - started)
        return pool, members

    def add_array(self, spec: JobSpec, first: int, last: int, max_running: int, owner: str, unlimited: bool = False
                  ) -> tuple[PoolRecord, list[str]]:
        """Admit and write `owner`'s array: one member per index first..last (arrays.py); its
        record and its member ids in index order."""
        started = time.perf_counter()
        limits.check_array(first, last, max_running)
        self._count(owner, last - first + 1, unlimited)
        self.check(spec)
        array, members = self.arrays.add_array(spec, first, last, max_running, owner)
        metrics.job_submitted(len(members), time.perf_counter() - started)
        return array, members

    def add_batch(self, specs: list[JobSpec], owner: str, unlimited: bool = False) -> list[JobRecord]:
        """Admit every spec, then write them all (arrays.py); nothing is written when one is
        refused (InvalidSpec naming its place in the batch)."""
        started = time.perf_counter()
        if not specs:
            raise InvalidSpec("the batch is empty: no command to add")
        if len(specs) > limits.MAX_BATCH:
            raise InvalidSpec(f"the batch has {len(specs)} jobs, more than the limit of {limits.MAX_BATCH}")
        self._count(owner, len(specs), unlimited)
        for number, spec in enumerate(specs, 1):
            try:
                self.check(spec)
            except InvalidSpec as exc:
                raise InvalidSpec(f"job {number} of the batch: {exc}") from None
        records = self.arrays.add_batch(specs, owner)
        metrics.job_submitted(len(records), time.perf_counter() - started)
        return records

    def _count(self, owner: str, adding: int, unlimited: bool) -> None:
        if not unlimited:
            self.quota.check(owner, adding)

    def check(self, spec: JobSpec) -> None:
        """InvalidSpec with the reason when the spec is malformed or no node could run it."""
        spec.validate()
        if fits(self.me, spec) and (not spec.node or spec.node == self.me.name) and runs_image(self.me, spec):
            return
        nodes = self._live_nodes()
        if spec.node:  # pinned: that node decides; one not registered may yet come (the job waits)
            nodes = [n for n in nodes if n.name == spec.node]
            if not nodes:
                return
        if spec.image:
            nodes = [n for n in nodes if has_image(n, spec)]
            if not nodes:
                raise NoNodeHasImage(spec.image, spec.node)
            if not any(runs_image(n, spec) for n in nodes):
                raise InvalidSpec(f"empty command, and the image {spec.image!r} has no Entrypoint or Cmd to run instead")
        if not any(fits(node, spec) for node in nodes):
            raise InvalidSpec(_refusal(spec, nodes))

    def _live_nodes(self) -> list[NodeInfo]:
        kvs, _ = self.store.get_prefix(self.keys.nodes_prefix)
        nodes = []
        for kv in kvs:
            try:
                nodes.append(decode.node(kv.key, kv.value, kv.mod_revision))
            except RecordError:
                continue  # a malformed registration is nobody's offer (logged once)
        return nodes or [self.me]


def _refusal(spec: JobSpec, nodes: list[NodeInfo]) -> str:
    """One sentence for the first thing no node can give (with the most any node has)."""
    short = [_shortfalls(n, spec) for n in nodes]
    what = next((kind for kind in ("offer", "memory", "pids", "cpus") if all(kind in s for s in short)), None)
    where = "node " + nodes[0].name if len(nodes) == 1 else "any node"
    if what == "offer":  # a job network or volumes no node offers
        return Needs.of(spec).why_unmet([(n.subnet, tuple(n.volume_roots)) for n in nodes])
    if what is None:  # each node lacks something, but not the same thing
        asked = [f"-mem {format_size(spec.memory_bytes)}" if spec.memory_bytes is not None else "",
                 f"-pids {spec.pids}" if spec.pids is not None else "", f"-cpus {spec.cpus:g}" if spec.cpus is not None else "",
                 "-net bridge" if spec.net == "bridge" else "", *(f"-volume {v}" for v in spec.volumes)]
        return f"no node can give all of {', '.join(a for a in asked if a)} at once"
    if what == "memory":
        best = max(nodes, key=lambda n: n.memory_bytes)
        return (f"-mem {format_size(spec.memory_bytes)} is more than {where} offers its jobs "
                f"(the most: {format_size(best.memory_bytes)} on {best.name})")
    if what == "pids":
        best = max(nodes, key=lambda n: n.max_pids)
        return f"-pids {spec.pids} is more than {where} allows its jobs in all (the most: {best.max_pids} on {best.name})"
    best = max(nodes, key=lambda n: n.cores)
    return f"-cpus {spec.cpus:g} is more than {where} has (the most: {best.cores} cores on {best.name})"
