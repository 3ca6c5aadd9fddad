"""JobsServicer: the Jobs gRPC service. Validates input, calls the cluster layer, and leaves
every error to @maps_errors (one status code per error class)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import grpc

from lclusterd.api.convert import job_to_proto, node_to_proto, pool_to_proto, spec_from_proto
from lclusterd.api.errors import maps_errors, maps_stream_errors
from lclusterd.api.peers import PROXIED_KEY, Peers
from lclusterd.cluster.admission import Admission
from lclusterd.cluster.events import JobEvents
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.logs import LogFiles
from lclusterd.cluster.node import list_nodes, set_draining
from lclusterd.cluster.pools import Pools
from lclusterd.cluster.retention import removal_of
from lclusterd.errors import InvalidSpec, IsAPool, JobNotFound, TooBusy, WaitTimedOut
from lclusterd.model import NODE_NAME, QUEUED, STATES, JobRecord, PoolRecord, parse_job_id
from lclusterd.rpc import lclusterd_pb2 as pb
from lclusterd.rpc import lclusterd_pb2_grpc as pb_grpc

FOLLOW_TICK = 0.1  # how often a followed job's log files are read again
WAIT_TICK = 1.0  # a waiter re-reads the record at least this often (in case a wake-up was missed)
CHUNK = 64 * 1024
# Wait and Logs(follow) hold a server thread each; past this many, they are refused at once
# (RESOURCE_EXHAUSTED) so the threads left keep add/check/kill answering.
MAX_BLOCKING = 192


class JobsServicer(pb_grpc.JobsServicer):
    def __init__(self, jobs: Jobs, events: JobEvents, logs: LogFiles, node: str, admission: Admission, peers: Peers):
        self.jobs = jobs
        self.pools = Pools(jobs)
        self.peers = peers
        self.events = events
        self.logs = logs
        self.node = node
        self.admission = admission
        self._blocking = threading.BoundedSemaphore(MAX_BLOCKING)

    @contextmanager
    def _blocking_slot(self):
        if not self._blocking.acquire(blocking=False):
            raise TooBusy(f"this node already serves {MAX_BLOCKING} waits and follows; try again later")
        try:
            yield
        finally:
            self._blocking.release()

    def _pool(self, job_id: str, missing: JobNotFound) -> PoolRecord:
        """The pool with this id, for a request whose id is no job's; else JobRemoved if
        retention removed it, else `missing` is raised."""
        pool = self.pools.get(job_id)
        if pool is None:
            raise removal_of(self.jobs.store, self.jobs.keys, job_id) or missing
        return pool

    @maps_errors
    def Add(self, request: pb.AddRequest, context) -> pb.AddReply:
        spec = spec_from_proto(request.spec)
        self.admission.check(spec)
        if request.all_nodes:  # a pool: one member per ready node (Pools.add refuses a pinned spec)
            pool, members = self.pools.add(spec)
            return pb.AddReply(id=pool.id, job=pool_to_proto(pool, members))
        record = self.jobs.add(spec)
        return pb.AddReply(id=record.id, job=job_to_proto(record))

    @maps_errors
    def Check(self, request: pb.JobRef, context) -> pb.Job:
        job_id = parse_job_id(request.id)
        try:
            record, _ = self.jobs.get(job_id)
        except JobNotFound as missing:
            pool = self._pool(job_id, missing)
            members = self.pools.with_kill_requests([r for r, _ in self.pools.members(pool)])
            return pool_to_proto(pool, members)
        if not record.terminal and record.state != QUEUED:
            record.kill_requested = self.jobs.kill_requested(job_id)
        return job_to_proto(record)

    @maps_errors
    def Kill(self, request: pb.JobRef, context) -> pb.Job:
        job_id = parse_job_id(request.id)
        try:
            return job_to_proto(self.jobs.kill(job_id))
        except JobNotFound as missing:
            pool = self._pool(job_id, missing)
            return pool_to_proto(pool, self.pools.kill(pool))

    @maps_errors
    def List(self, request: pb.ListRequest, context) -> pb.ListReply:
        states = {s.upper() for s in request.states}
        unknown = sorted(states - set(STATES))
        if unknown:
            raise InvalidSpec(f"unknown state {unknown[0]!r}: expected one of {', '.join(STATES)}")
        if request.limit < 0:
            raise InvalidSpec(f"limit must not be negative, not {request.limit}")
        records = self.jobs.list(states or None, request.limit)
        return pb.ListReply(jobs=[job_to_proto(r) for r in records])

    @maps_errors
    def Nodes(self, request: pb.NodesRequest, context) -> pb.NodesReply:
        return pb.NodesReply(nodes=[node_to_proto(view) for view in list_nodes(self.jobs.store, self.jobs.keys)])

    @maps_errors
    def Drain(self, request: pb.DrainRequest, context) -> pb.Node:
        name = request.node.strip()
        if not NODE_NAME.match(name):
            raise InvalidSpec(f"invalid node name {request.node!r}")
        return node_to_proto(set_draining(self.jobs.store, self.jobs.keys, name, request.drain))

    @maps_stream_errors
    def Logs(self, request: pb.LogsRequest, context) -> Iterator[pb.LogChunk]:
        job_id = parse_job_id(request.id)
        try:
            record, _ = self.jobs.get(job_id)
        except JobNotFound as missing:
            pool = self._pool(job_id, missing)
            raise IsAPool(job_id, len(pool.members), f"read a member's logs (lclient -check {job_id} lists them)") from None
        proxied = any(k == PROXIED_KEY for k, _ in context.invocation_metadata())
        if record.node and record.node != self.node and not proxied:
            yield from self.peers.logs(record.node, request, context)
            return
        offsets = [0, 0]
        if not request.follow:
            yield from self._read_new(job_id, offsets)
            return
        with self._blocking_slot(), self.events.subscribe(job_id) as changed:
            while True:
                ended = record.terminal
                yield from self._read_new(job_id, offsets)
                if ended or not context.is_active():
                    return
                changed.wait(FOLLOW_TICK)
                if changed.is_set():
                    changed.clear()
                    latest = changed.latest
                    record = JobRecord.from_bytes(latest) if latest is not None else self.jobs.get(job_id)[0]
                    if record.node and record.node != self.node:  # its next attempt runs elsewhere
                        if not proxied:
                            yield from self.peers.logs(record.node, request, context)
                        return

    def _read_new(self, job_id: str, offsets: list[int]) -> Iterator[pb.LogChunk]:
        for index, (path, stream) in enumerate(((self.logs.stdout(job_id), pb.LogChunk.STDOUT),
                                                (self.logs.stderr(job_id), pb.LogChunk.STDERR))):
            try:
                with open(path, "rb") as f:
                    f.seek(offsets[index])
                    while data := f.read(CHUNK):
                        offsets[index] += len(data)
                        yield pb.LogChunk(stream=stream, data=data)
            except FileNotFoundError:
                continue

    @maps_errors
    def Wait(self, request: pb.WaitRequest, context) -> pb.Job:
        job_id = parse_job_id(request.id)
        if request.timeout_seconds < 0:
            raise InvalidSpec(f"timeout must not be negative, not {request.timeout_seconds:g}")
        deadline = time.monotonic() + request.timeout_seconds if request.timeout_seconds else None
        with self._blocking_slot():
            try:
                return self._wait_ended([job_id], lambda: [self.jobs.get(job_id)], lambda rs: job_to_proto(rs[0]),
                                        deadline, request.timeout_seconds, context)
            except JobNotFound as missing:
                pool = self._pool(job_id, missing)
            return self._wait_ended(pool.member_ids(), lambda: self.pools.members(pool), lambda rs: pool_to_proto(pool, rs),
                                    deadline, request.timeout_seconds, context)

    def _wait_ended(self, ids: list[str], read: Callable[[], list[tuple[JobRecord, int]]],
                    answer: Callable[[list[JobRecord]], pb.Job], deadline: float | None, seconds: float, context) -> pb.Job:
        """Until every job of `ids` (the job waited for, or the members of the pool) has ended;
        `answer` turns their records into the reply (and names the job or pool on a timeout).
        The jobs/ watch carries each new record (and JobEvents the newest it saw, so a job that
        changed since this node started needs no etcd read at all); `read` (records and mod
        revisions, from etcd) runs when the watch has not seen one of them, and at least every
        WAIT_TICK, in case a wake-up was missed."""
        with self.events.subscribe_many(ids) as flags:
            if all(flag.latest is not None for flag in flags):
                records, revisions = [JobRecord.from_bytes(f.latest) for f in flags], [f.revision for f in flags]
                read_at = time.monotonic()
            else:
                read_at = None
            while True:
                if read_at is None or time.monotonic() - read_at >= WAIT_TICK:
                    found = read()
                    records, revisions = [r for r, _ in found], [rev for _, rev in found]
                    read_at = time.monotonic()
                if all(r.terminal for r in records):
                    return answer(records)
                if not context.is_active():
                    context.abort(grpc.StatusCode.CANCELLED, "the client went away")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    now = answer(records)
                    raise WaitTimedOut(now.id, now.state, seconds, kind="pool" if now.is_pool else "job")
                flags[0].wait(WAIT_TICK if remaining is None else min(WAIT_TICK, remaining))
                flags[0].clear()
                for i, flag in enumerate(flags):  # what the watch brought since
                    if flag.latest is not None and flag.revision > revisions[i]:
                        records[i], revisions[i] = JobRecord.from_bytes(flag.latest), flag.revision
