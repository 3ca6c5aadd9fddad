"""JobsServicer: the Jobs gRPC service. Validates input, calls the cluster layer's services
(ApiServices), and leaves every error to @maps_errors (one status code per error class)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import grpc

from lclusterd.api import access
from lclusterd.api.convert import (events_of, job_to_proto, node_to_proto, pool_to_proto, rows_to_proto, spec_from_proto,
                                   spec_to_proto)
from lclusterd.api.errors import maps_errors, maps_stream_errors
from lclusterd.api.identity import Authenticator, Identity
from lclusterd.api.peers import Peers
from lclusterd.api.slots import BlockingSlots
from lclusterd.api.tokens import WebPage
from lclusterd.api.waiting import Waited
from lclusterd.cluster.admission import Admission
from lclusterd.cluster import decode
from lclusterd.cluster.events import JobEvents
from lclusterd.cluster.execs import Execs
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.jobstates import FEED_LIMIT, JobStates
from lclusterd.cluster.logs import LogFiles
from lclusterd.cluster.lookup import FoundJob, FoundPool, Lookup
from lclusterd.cluster.node import NodeDirectory
from lclusterd.errors import InvalidSpec, IsAPool, JobNotFound, NotRunning, RecordError, TooBusy, WaitTimedOut, WebDisabled
from lclusterd.model import NODE_NAME, QUEUED, RUNNING, STATES, JobRecord, parse_job_id
from lclusterd.rpc import lclusterd_pb2 as pb
from lclusterd.rpc import lclusterd_pb2_grpc as pb_grpc
from lclusterd.rpc.metadata import PROXIED_KEY

FOLLOW_TICK = 0.1  # how often a followed job's log files are read again
WAIT_TICK = 1.0  # a waiter re-reads the record at least this often (in case a wake-up was missed)
# ... and a group's members WAIT_TICK per this many of them, at most MAX_REREAD apart: re-reading a
# 10,000-member array every second would be 79 etcd reads and 10,000 records decoded a second
REREAD_PER = 64
MAX_REREAD = 30.0
EVENTS_TICK = 1.0  # an Events stream looks at least this often whether its client is still there


@dataclass(frozen=True)
class ApiServices:
    """What the API serves from: this node's name and the cluster layer's services."""

    node: str
    jobs: Jobs
    admission: Admission
    lookup: Lookup
    nodes: NodeDirectory
    events: JobEvents
    logs: LogFiles
    peers: Peers
    states: JobStates
    web: WebPage | None = None  # this node's web page (--web-listen), None when it serves none
    execs: Execs | None = None  # commands run in this node's jobs (lclient -exec); None: not here

    def as_checked(self, found: FoundJob | FoundPool) -> pb.Job:
        """A resolved job or pool as Check answers it (and the web page shows it): a pool with
        its members, a job that may still run with whether a kill was asked for."""
        if isinstance(found, FoundPool):
            pools = self.lookup.pools
            return pool_to_proto(found.pool, pools.with_kill_requests([r for r, _ in pools.members(found.pool)]))
        record = found.record
        if not record.terminal and record.state != QUEUED:
            record.kill_requested = self.jobs.kill_requested(record.id)
        return job_to_proto(record)


_STREAMS = (pb.LogChunk.STDOUT, pb.LogChunk.STDERR)


class JobsServicer(pb_grpc.JobsServicer):
    """Every call first finds its caller (`authenticator`) and checks what they may do
    (access.py) before it reads or changes anything but the record it checks against."""

    def __init__(self, services: ApiServices, authenticator: Authenticator):
        self.authenticator = authenticator
        self.services = services
        self.node = services.node
        self.jobs = services.jobs
        self.pools = services.lookup.pools
        self.admission = services.admission
        self.lookup = services.lookup
        self.nodes = services.nodes
        self.events = services.events
        self.logs = services.logs
        self.peers = services.peers
        self.web = services.web
        self.states = services.states
        self.slots = BlockingSlots()  # Wait, Logs(follow) and Events each hold one while they block

    def _resolve_for(self, context, job_id: str, what: str, watched: bool = False) -> FoundJob | FoundPool:
        """The job or pool `job_id`, if the caller may `what` it (NotAllowed otherwise). With
        `watched`, a job's record the jobs/ watch brought is taken as it is (_watched_job)."""
        return self._resolved_for(self.authenticator.identify(context), job_id, what, watched)

    def _resolved_for(self, caller: Identity, job_id: str, what: str, watched: bool = False) -> FoundJob | FoundPool:
        found = (watched and self._watched_job(job_id)) or self.lookup.resolve(job_id)
        access.check_may_act(caller, _owner_of(found), what, job_id)
        return found

    @maps_errors
    def Add(self, request: pb.AddRequest, context) -> pb.AddReply:
        caller = self.authenticator.identify(context)
        access.check_may_add(caller)
        if request.batch:  # -add -: every spec admitted before any is written
            if request.all_nodes or request.HasField("array"):
                raise InvalidSpec("a batch is of single jobs: it cannot be a pool or an array as well")
            specs = [spec_from_proto(s) for s in request.batch]
            self._check_parents(caller, specs)
            records = self.admission.add_batch(specs, caller.name, caller.admin)
            return pb.AddReply(job=pb.Job(members=[job_to_proto(r) for r in records], member_count=len(records)))
        spec = spec_from_proto(request.spec)
        self._check_parents(caller, [spec])
        if request.HasField("array"):
            if request.all_nodes:
                raise InvalidSpec("an array runs its members wherever there is room: it cannot be a pool as well")
            a = request.array
            array, members = self.admission.add_array(spec, a.first, a.last, a.max_running, caller.name,
                                                     caller.admin)
            # the array as just queued, without a document per member (-check lists them)
            queued = pb.Job(id=array.id, state=QUEUED, spec=spec_to_proto(array.spec), created_at=array.created_at,
                            owner=array.owner, is_array=True, member_count=len(members))
            queued.spec.stdin = b""  # (not echoed back, as for a job)
            return pb.AddReply(id=array.id, job=queued)
        if request.all_nodes:  # a pool: one member per ready node
            pool, members = self.admission.add_pool(spec, caller.name, caller.admin)
            return pb.AddReply(id=pool.id, job=pool_to_proto(pool, members))
        record = self.admission.add(spec, caller.name, caller.admin)
        return pb.AddReply(id=record.id, job=job_to_proto(record))

    def _check_parents(self, caller, specs) -> None:
        """Every -after parent exists (a job, pool or array: JobNotFound otherwise, so no cycle
        can be formed) and is the caller's to wait for."""
        for spec in specs:
            if spec.after:
                spec.validate()  # (a malformed id is a bad request, not an unknown job)
        for parent in dict.fromkeys(p for spec in specs for p in spec.after):
            try:
                found = self.lookup.resolve(parent)
            except JobNotFound as exc:
                raise JobNotFound(parent) if type(exc) is JobNotFound else exc from None
            access.check_may_act(caller, _owner_of(found), "wait for", parent)

    @maps_errors
    def Check(self, request: pb.JobRef, context) -> pb.Job:
        job_id = parse_job_id(request.id)
        return self.services.as_checked(self._resolve_for(context, job_id, "see"))

    @maps_errors
    def Kill(self, request: pb.JobRef, context) -> pb.Job:
        job_id = parse_job_id(request.id)
        found = self._resolve_for(context, job_id, "kill")
        if isinstance(found, FoundPool):
            return pool_to_proto(found.pool, self.pools.kill(found.pool))
        return job_to_proto(self.jobs.kill(job_id))

    @maps_errors
    def List(self, request: pb.ListRequest, context) -> pb.ListReply:
        owner = access.owner_filter(self.authenticator.identify(context))
        states = {s.upper() for s in request.states}
        unknown = sorted(states - set(STATES))
        if unknown:
            raise InvalidSpec(f"unknown state {unknown[0]!r}: expected one of {', '.join(STATES)}")
        if request.limit < 0:
            raise InvalidSpec(f"limit must not be negative, not {request.limit}")
        if request.expand_arrays:
            return pb.ListReply(jobs=[job_to_proto(r) for r in self.jobs.list(states or None, request.limit, owner)])
        # an array's row sums up all its members: filtered and cut after folding
        return pb.ListReply(jobs=rows_to_proto(self.jobs.rows(states or None, request.limit, owner)))

    @maps_errors
    def Nodes(self, request: pb.NodesRequest, context) -> pb.NodesReply:
        self.authenticator.identify(context)
        return pb.NodesReply(nodes=[node_to_proto(view) for view in self.nodes.list()])

    @maps_errors
    def WebLogin(self, request: pb.WebLoginRequest, context) -> pb.WebLoginReply:
        caller = self.authenticator.identify(context)
        access.check_may_use_web(caller)
        if self.web is None:
            raise WebDisabled(f"node {self.node} serves no web page (start it with --web-listen HOST:PORT)")
        issued = self.web.tokens.issue(caller)
        return pb.WebLoginReply(url=self.web.login_url(issued), login_expires_at=issued.login_expires_at,
                                token=issued.session, expires_at=issued.expires_at, user=caller.name, admin=caller.admin)

    @maps_errors
    def Drain(self, request: pb.DrainRequest, context) -> pb.Node:
        access.check_admin(self.authenticator.identify(context), "undrain a node" if not request.drain else "drain a node")
        name = request.node.strip()
        if not NODE_NAME.match(name):
            raise InvalidSpec(f"invalid node name {request.node!r}")
        return node_to_proto(self.nodes.set_draining(name, request.drain))

    def _job_for(self, context, request_id: str, what: str, instead: str) -> tuple[Identity, JobRecord, bool]:
        """(caller, record, proxied) of the job a per-node call (Logs, Exec) names, once the
        caller may `what` it; a call another node proxied was checked there. IsAPool (saying
        to do `instead` with a member) for a pool's id."""
        job_id = parse_job_id(request_id)
        caller = self.authenticator.identify(context)
        proxied = any(k == PROXIED_KEY for k, _ in context.invocation_metadata())
        if proxied:  # the node it came through checked the user
            access.check_may_proxy(caller)
        found = self.lookup.resolve(job_id) if proxied else self._resolved_for(caller, job_id, what)
        if isinstance(found, FoundPool):
            raise IsAPool(job_id, len(found.pool.members), f"{instead} (lclient -check {job_id} lists them)",
                          found.pool.kind)
        return caller, found.record, proxied

    @maps_stream_errors
    def Logs(self, request: pb.LogsRequest, context) -> Iterator[pb.LogChunk]:
        caller, record, proxied = self._job_for(context, request.id, "see", "read a member's logs")
        job_id = record.id
        if record.node and record.node != self.node and not proxied:
            yield from self.peers.logs(record.node, request, context)
            return
        offsets = [0, 0]
        if not request.follow:
            yield from self._read_new(job_id, offsets)
            return
        with self.slots.held(caller), self.events.subscribe(job_id) as changed:
            while True:
                ended = record.terminal
                yield from self._read_new(job_id, offsets)
                if ended or not context.is_active():
                    return
                changed.wait(FOLLOW_TICK)
                if changed.is_set():
                    changed.clear()
                    record = self._from_watch(job_id, changed.seen) or self.jobs.get(job_id)[0]
                    if record.node and record.node != self.node:  # its next attempt runs elsewhere
                        if not proxied:
                            yield from self.peers.logs(record.node, request, context)
                        return

    @maps_stream_errors
    def Exec(self, request: pb.ExecRequest, context) -> Iterator[pb.ExecChunk]:
        caller, record, proxied = self._job_for(context, request.id, "exec in", "run it in a member")
        job_id = record.id
        if record.state != RUNNING or self.services.execs is None:
            raise NotRunning(f"job {job_id} is {record.state}: a command runs only in a running job")
        if record.node != self.node:
            if proxied:  # its record moved on since the node it came through read it
                raise NotRunning(f"job {job_id} no longer runs on node {self.node}")
            yield from self.peers.exec(record.node, request, context)
            return
        with self.slots.held(caller):
            execs = self.services.execs
            session = execs.start(job_id, request.command, request.stdin)
            context.add_callback(lambda: execs.kill(session))  # the client went away: end the command
            yield from _exec_chunks(execs.output(session))

    def _watched_job(self, job_id: str) -> FoundJob | None:
        """The job as the jobs/ watch last saw it, without reading etcd; None when the watch
        has no record of it, or a malformed one (then resolve() reads etcd and says what is
        wrong). The record may trail etcd by the watch's delay, so this serves only a caller
        that needs what never changes (the owner; that the id names a job and not a pool)
        and follows later changes itself: Wait (an etcd read and a full decode were 40% of a
        Wait's Python time)."""
        seen = self.events.recent(job_id)
        record = self._from_watch(job_id, seen) if seen is not None else None
        return FoundJob(record, seen[1]) if record is not None else None

    def _from_watch(self, job_id: str, seen: tuple[bytes | None, int]) -> JobRecord | None:
        """The record of `job_id` the jobs/ watch brought (a Subscription's `seen`, read once);
        None when it brought none or a malformed one (decode.py logs it): then read etcd, which
        answers MalformedRecord."""
        raw, revision = seen
        if raw is None:
            return None
        try:
            return decode.job(self.jobs.keys.job(job_id), raw, revision)
        except RecordError:
            return None

    @maps_stream_errors
    def Events(self, request: pb.EventsRequest, context) -> Iterator[pb.JobEvent]:
        caller = self.authenticator.identify(context)
        owner = access.owner_filter(caller)  # as List: a user's own jobs only
        with self.slots.held(caller), self.states.listen() as feed:
            context.add_callback(feed.wake)  # the client went away: stop waiting at once
            while context.is_active():
                for change in feed.take(EVENTS_TICK):
                    if owner is None or change.record.owner == owner:
                        yield from events_of(change)
                if feed.overflowed:
                    raise TooBusy(f"this events stream fell more than {FEED_LIMIT} changes behind; start it again")

    def _read_new(self, job_id: str, offsets: list[int]) -> Iterator[pb.LogChunk]:
        for stream, data in self.logs.read_new(job_id, offsets):
            yield pb.LogChunk(stream=_STREAMS[stream], data=data)

    @maps_errors
    def Wait(self, request: pb.WaitRequest, context) -> pb.Job:
        job_id = parse_job_id(request.id)
        if request.timeout_seconds < 0:
            raise InvalidSpec(f"timeout must not be negative, not {request.timeout_seconds:g}")
        deadline = time.monotonic() + request.timeout_seconds if request.timeout_seconds else None
        caller = self.authenticator.identify(context)
        found = self._resolved_for(caller, job_id, "wait for", watched=True)
        with self.slots.held(caller):
            if isinstance(found, FoundJob):
                return self._wait_ended([job_id], lambda: [self.jobs.get(job_id)], lambda rs: job_to_proto(rs[0]),
                                        deadline, request.timeout_seconds, context, known=[(found.record, found.revision)])
            pool = found.pool
            return self._wait_ended(pool.member_ids(), lambda: self.pools.members(pool), lambda rs: pool_to_proto(pool, rs),
                                    deadline, request.timeout_seconds, context)

    def _wait_ended(self, ids: list[str], read: Callable[[], list[tuple[JobRecord, int]]],
                    answer: Callable[[list[JobRecord]], pb.Job], deadline: float | None, seconds: float, context,
                    known: list[tuple[JobRecord, int]] | None = None) -> pb.Job:
        """Until every job of `ids` (the job waited for, or the members of the pool) has ended;
        `answer` turns their records into the reply (and names the job or pool on a timeout).
        The jobs/ watch carries each new record (and JobEvents the newest it saw, so a job that
        changed since this node started needs no etcd read at all; waiting.py); `read` (records
        and mod revisions, from etcd) runs when the watch has not seen one of them, and at least
        every WAIT_TICK (for a large group, less often: REREAD_PER), in case a wake-up was missed.
        `known`: the records already found (and decoded) for `ids`, which the watch's own are
        then not decoded again unless newer."""
        reread = min(MAX_REREAD, WAIT_TICK * max(1, len(ids) // REREAD_PER))
        waited = Waited(self.jobs.keys, ids)
        if known is not None:
            waited.read(known)
        with self.events.subscribe_many(ids) as flags:
            touched = flags[0].touched
            read_at = time.monotonic() if all(waited.watched(i, flag.seen) for i, flag in enumerate(flags)) else None
            while True:
                if read_at is None or time.monotonic() - read_at >= reread:
                    waited.read(read())
                    read_at = time.monotonic()
                if not waited.left:
                    return answer(self._records_of(waited, read))
                if not context.is_active():
                    context.abort(grpc.StatusCode.CANCELLED, "the client went away")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    now = answer(self._records_of(waited, read))
                    raise WaitTimedOut(now.id, now.state, seconds, kind=_kind(now))
                flags[0].wait(WAIT_TICK if remaining is None else min(WAIT_TICK, remaining))
                flags[0].clear()
                while touched:  # the jobs whose record the watch brought since (or forgot: read etcd)
                    i = touched.popleft()
                    if not waited.watched(i, flags[i].seen):
                        read_at = None

    @staticmethod
    def _records_of(waited: Waited, read: Callable[[], list[tuple[JobRecord, int]]]) -> list[JobRecord]:
        """Every job's newest record for the answer; from etcd if one the watch brought is malformed."""
        records = waited.records()
        if records is None:
            waited.read(read())
            records = waited.records()
        return records


def _kind(job: pb.Job) -> str:
    return "pool" if job.is_pool else "array" if job.is_array else "job"


def _owner_of(found: FoundJob | FoundPool) -> str:
    return found.pool.owner if isinstance(found, FoundPool) else found.record.owner


def _exec_chunks(output) -> Iterator[pb.ExecChunk]:
    """The command's output as chunks, then its end as the last one."""
    for item in output:
        if isinstance(item, tuple):
            yield pb.ExecChunk(stream=_STREAMS[item[0]], data=item[1])
            continue
        end = pb.ExecChunk(ended=True, error=item.error)
        if item.exit_code is not None:
            end.exit_code = item.exit_code
        if item.signal is not None:
            end.signal = item.signal
        yield end
