"""proto <-> model. Pure."""

from __future__ import annotations

from lclusterd.cluster.jobstates import StateChange
from lclusterd.cluster.listing import Row, fold
from lclusterd.cluster.node import NodeView
from lclusterd.model import ARRAY, ASSIGNED, EXITED, QUEUED, RUNNING, JobRecord, JobSpec, PoolRecord, pool_outcome
from lclusterd.rpc import lclusterd_pb2 as pb


def spec_from_proto(msg: pb.JobSpec) -> JobSpec:
    return JobSpec(
        command=msg.command,
        env=dict(msg.env),
        memory_bytes=msg.memory_bytes if msg.HasField("memory_bytes") else None,
        cpus=msg.cpus if msg.HasField("cpus") else None,
        pids=msg.pids if msg.HasField("pids") else None,
        timeout=msg.timeout_seconds if msg.HasField("timeout_seconds") else None,
        stdin_data=msg.stdin,
        retries=msg.retries,
        node=msg.node,
        image=msg.image,
        net=msg.net or "none",
        publish=list(msg.publish),
        volumes=list(msg.volumes),
        workdir=msg.workdir,
        after=[parent.strip().lower().replace("-", "") for parent in msg.after],
        run_as=msg.run_as,
    )


def spec_to_proto(spec: JobSpec) -> pb.JobSpec:
    msg = pb.JobSpec(command=spec.command, env=spec.env, stdin=spec.stdin_data, retries=spec.retries, node=spec.node,
                     image=spec.image, net=spec.net, publish=spec.publish, volumes=spec.volumes,
                     workdir=spec.workdir, after=spec.after, run_as=spec.run_as)
    if spec.memory_bytes is not None:
        msg.memory_bytes = spec.memory_bytes
    if spec.cpus is not None:
        msg.cpus = spec.cpus
    if spec.pids is not None:
        msg.pids = spec.pids
    if spec.timeout is not None:
        msg.timeout_seconds = spec.timeout
    return msg


def job_to_proto(record: JobRecord) -> pb.Job:
    msg = pb.Job(
        id=record.id,
        state=record.state,
        spec=spec_to_proto(record.spec),
        node=record.node,
        attempt=record.attempt,
        created_at=record.created_at or 0.0,
        assigned_at=record.assigned_at or 0.0,
        started_at=record.started_at or 0.0,
        finished_at=record.finished_at or 0.0,
        oom_killed=record.oom_killed,
        error=record.error,
        host_pid=record.host_pid or 0,
        kill_requested=record.kill_requested,
        waiting=record.waiting,
        pool=record.pool if record.array_index is None else "",
        array=record.pool if record.array_index is not None else "",
        owner=record.owner,
        address=record.address,
        stdout_dropped_bytes=record.output_dropped.get("stdout", 0),
        stderr_dropped_bytes=record.output_dropped.get("stderr", 0),
        attempts=[pb.Attempt(attempt=a.get("attempt") or 0, node=a.get("node") or "", assigned_at=a.get("assigned_at") or 0.0,
                             started_at=a.get("started_at") or 0.0, ended_at=a.get("ended_at") or 0.0,
                             state=a.get("state") or "", reason=a.get("reason") or "") for a in record.history],
    )
    msg.spec.stdin = b""  # can be large; not echoed back
    if record.exit_code is not None:
        msg.exit_code = record.exit_code
    if record.signal is not None:
        msg.signal = record.signal
    if record.peak_memory_bytes is not None:
        msg.peak_memory_bytes = record.peak_memory_bytes
    if record.cpu_seconds is not None:
        msg.cpu_seconds = record.cpu_seconds
    if record.array_index is not None:
        msg.array_index = record.array_index
    return msg


def pool_to_proto(pool: PoolRecord, members: list[JobRecord], with_members: bool = True) -> pb.Job:
    """The pool as a Job: is_pool, its members in node order, and the state, times and outcome
    summed up from theirs (model.pool_outcome): the exit code, signal and error of a pool that
    did not succeed are those of the member that decided it."""
    state, decided = pool_outcome(members)
    ended = all(m.terminal for m in members)
    msg = pb.Job(id=pool.id, state=state, spec=spec_to_proto(pool.spec), created_at=pool.created_at or 0.0,
                 is_pool=not pool.is_array, is_array=pool.is_array, members=[job_to_proto(m) for m in members] if with_members else [],
                 member_count=len(members), owner=pool.owner,
                 kill_requested=any(m.kill_requested for m in members if not m.terminal))
    msg.spec.stdin = b""
    assigned = [m.assigned_at for m in members if m.assigned_at]
    started = [m.started_at for m in members if m.started_at]
    msg.assigned_at = min(assigned) if assigned else 0.0
    msg.started_at = min(started) if started else 0.0
    if ended:
        msg.finished_at = max((m.finished_at or 0.0) for m in members)
    if state == EXITED and decided is None:
        msg.exit_code = 0
    elif decided is not None:
        if decided.exit_code is not None:
            msg.exit_code = decided.exit_code
        if decided.signal is not None:
            msg.signal = decided.signal
        msg.oom_killed = decided.oom_killed
        code = f" with exit code {decided.exit_code}" if decided.state == EXITED and decided.exit_code is not None else ""
        where = (f"(index {decided.array_index})" if decided.array_index is not None
                 else f"on node {decided.node or decided.spec.node}")
        msg.error = f"member {decided.id} {where} ended {decided.state}{code}" + (f": {decided.error}" if decided.error else "")
    return msg


def list_rows(records: list[JobRecord], states: set[str], limit: int, expand_arrays: bool) -> list[pb.Job]:
    """-list's rows from records in its order (cluster/listing.py's fold: an array as one row at
    its first member's place unless `expand_arrays`, only rows in `states`, the newest `limit`)."""
    return rows_to_proto(fold(records, states, limit, expand_arrays))


def rows_to_proto(rows: list[Row]) -> list[pb.Job]:
    """-list's rows as messages: a job each, an array (its members) as one, member_count set."""
    return [job_to_proto(row) if isinstance(row, JobRecord) else _array_row(row) for row in rows]


def _array_row(members: list[JobRecord]) -> pb.Job:
    """An array as one -list row, from the members listed (its record is not read)."""
    members.sort(key=lambda m: m.array_index)
    first = members[0]
    array = PoolRecord(id=first.pool, spec=first.spec.without_array_env(), created_at=first.created_at, owner=first.owner, kind=ARRAY,
                       max_running=first.array_limit)
    return pool_to_proto(array, members, with_members=False)


def node_to_proto(view: NodeView) -> pb.Node:
    info = view.info
    return pb.Node(name=info.name, address=info.address, capacity=info.capacity, running=view.running,
                   prime=view.prime, version=info.version, started_at=info.started_at, state=view.state,
                   memory_bytes=info.memory_bytes, memory_used_bytes=view.memory_used, images=info.images,
                   subnet=info.subnet, volume_roots=info.volume_roots)


def events_of(change: StateChange) -> list[pb.JobEvent]:
    """The Events messages of one state change: one, or two when the record went from not
    running to its end in one write (a short job's start and end are written together) and
    did start: RUNNING at its start time, then the end. Each at the time the record gives for
    its state, else when the node saw it."""
    record = change.record
    job = job_to_proto(record)
    previous = change.previous
    events = []
    if record.terminal and record.started_at and previous in ("", QUEUED, ASSIGNED):
        running = pb.Job()
        running.CopyFrom(job)
        running.state, running.finished_at = RUNNING, 0.0
        for name in ("exit_code", "signal", "peak_memory_bytes", "cpu_seconds"):
            running.ClearField(name)
        running.error, running.oom_killed = "", False
        events.append(pb.JobEvent(time=record.started_at, previous_state=previous, job=running))
        previous = RUNNING
    when = {QUEUED: record.created_at if not change.previous else None, ASSIGNED: record.assigned_at,
            RUNNING: record.started_at}.get(record.state, record.finished_at)
    events.append(pb.JobEvent(time=when or change.seen_at, previous_state=previous, job=job))
    return events
