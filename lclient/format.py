"""Human tables and stable JSON for lclient's read commands. Pure."""

from __future__ import annotations

import json
import signal as signals
import time
from typing import TYPE_CHECKING, Any

from lclient.units import format_size
from lclusterd.states import TERMINAL

if TYPE_CHECKING:  # the messages' types only: formatting reads fields and never builds one
    from lclusterd.rpc import lclusterd_pb2 as pb

SCHEMA_VERSION = 1


def signal_name(number: int) -> str:
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"signal {number}"


def outcome(job: pb.Job) -> str:
    """'EXITED (exit code 3)', 'KILLED (SIGKILL)', 'OOM_KILLED', 'RUNNING'..."""
    if job.HasField("exit_code") and job.state == "EXITED":
        return f"{job.state} (exit code {job.exit_code})"
    if job.HasField("signal"):
        return f"{job.state} ({signal_name(job.signal)})"
    return job.state


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}" if ts else "-"


_LIMITS = ("memory_bytes", "cpus", "pids", "timeout_seconds")  # None where the node's default applies


def job_json(job: pb.Job) -> dict[str, Any]:
    spec = job.spec
    data = {
        "schema_version": SCHEMA_VERSION,
        "id": job.id,
        "state": job.state,
        "node": job.node or None,
        "attempt": job.attempt,
        "command": spec.command,
        "image": spec.image or None,  # None: the node's rootfs (busybox)
        "owner": job.owner or None,
        "limits": {name: getattr(spec, name) if spec.HasField(name) else None for name in _LIMITS},
        "retries": spec.retries,
        "created_at": job.created_at or None,
        "assigned_at": job.assigned_at or None,
        "started_at": job.started_at or None,
        "finished_at": job.finished_at or None,
        "exit_code": job.exit_code if job.HasField("exit_code") else None,
        "signal": job.signal if job.HasField("signal") else None,
        "signal_name": signal_name(job.signal) if job.HasField("signal") else None,
        "oom_killed": job.oom_killed,
        "error": job.error or None,
        "host_pid": job.host_pid or None,
        "peak_memory_bytes": job.peak_memory_bytes if job.HasField("peak_memory_bytes") else None,
        "cpu_seconds": job.cpu_seconds if job.HasField("cpu_seconds") else None,
        "kill_requested": job.kill_requested,
        "output_dropped_bytes": {"stdout": job.stdout_dropped_bytes, "stderr": job.stderr_dropped_bytes},
        "pinned_node": spec.node or None,
        "waiting": job.waiting or None,
        "attempts": [attempt_json(a) for a in job.attempts],  # earlier attempts; the current one is the job itself
        "pool": job.pool or None,  # a pool member: its pool's id
        "is_pool": job.is_pool,
        "net": spec.net or "none",
        "address": job.address or None,  # net bridge: its address on its node's bridge, once started
        "publish": list(spec.publish),
        "volumes": list(spec.volumes),
        "workdir": spec.workdir or None,
        "run_as": spec.run_as or None,  # -run-as (an image's User is not shown: it is the image's)
        "after": list(spec.after),  # -after parents
        "array": job.array or None,  # an array member: its array's id, and its index
        "array_index": job.array_index if job.HasField("array_index") else None,
        "is_array": job.is_array,
        "member_count": (job.member_count or len(job.members)) if job.is_pool or job.is_array else None,
    }
    if job.is_pool or job.is_array:  # a pool or array: its state sums up its members', each a job document
        data["members"] = [job_json(m) for m in job.members]
    return data


def attempt_json(a: pb.Attempt) -> dict[str, Any]:
    return {"attempt": a.attempt, "node": a.node or None, "started_at": a.started_at or None,
            "ended_at": a.ended_at or None, "state": a.state, "reason": a.reason or None}


def current_attempt_json(job: pb.Job) -> dict[str, Any]:
    return {"attempt": job.attempt, "node": job.node or None, "started_at": job.started_at or None,
            "ended_at": job.finished_at or None, "state": job.state, "reason": job.error or None}


def node_json(node: pb.Node) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "name": node.name, "address": node.address,
            "state": node.state or ("prime" if node.prime else "ready"), "prime": node.prime, "capacity": node.capacity,
            "running": node.running, "memory_bytes": node.memory_bytes or None, "memory_used_bytes": node.memory_used_bytes,
            "version": node.version, "started_at": node.started_at or None, "images": list(node.images),
            "subnet": node.subnet or None, "volume_roots": list(node.volume_roots)}


def event_json(event: pb.JobEvent) -> dict[str, Any]:
    """-events -json: one change of a job's state."""
    job = event.job
    return {"schema_version": SCHEMA_VERSION, "time": event.time, "id": job.id, "state": job.state,
            "previous_state": event.previous_state or None, "node": job.node or None, "owner": job.owner or None,
            "attempt": job.attempt, "exit_code": job.exit_code if job.HasField("exit_code") else None,
            "signal": job.signal if job.HasField("signal") else None,
            "signal_name": signal_name(job.signal) if job.HasField("signal") else None,
            "error": job.error or None, "pool": job.pool or None}


def event_text(event: pb.JobEvent) -> str:
    """-events: `TIME ID STATE (exit code N | SIGNAL) node=NODE owner=OWNER`."""
    job = event.job
    return f"{_when(event.time)}  {job.id}  {outcome(job)}  node={job.node or '-'}  owner={job.owner or '-'}"


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True)


def _limits(spec: pb.JobSpec) -> str:
    limits = []
    if spec.HasField("memory_bytes"):
        limits.append(f"memory={format_size(spec.memory_bytes)}")
    if spec.HasField("cpus"):
        limits.append(f"cpus={spec.cpus:g}")
    if spec.HasField("pids"):
        limits.append(f"pids={spec.pids}")
    if spec.HasField("timeout_seconds"):
        limits.append(f"timeout={spec.timeout_seconds:g}s")
    return " ".join(limits) or "node defaults"


def _rows_text(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows) + 1
    return "\n".join(f"{k + ':':<{width}} {v}" for k, v in rows)


def exit_text(job: pb.Job) -> str:
    """The EXIT column: the exit code, else the signal's name, else '-'."""
    if job.HasField("exit_code"):
        return str(job.exit_code)
    if job.HasField("signal"):
        return signal_name(job.signal)
    return "-"


def members_table(pool: pb.Job) -> str:
    if pool.is_array:
        rows = [[str(m.array_index), m.id, m.state + (" (kill requested)" if m.kill_requested else ""), m.node or "-",
                 exit_text(m)] for m in pool.members]
        return table(["INDEX", "JOB", "STATE", "NODE", "EXIT"], rows)
    rows = [[m.node or m.spec.node or "-", m.id, m.state + (" (kill requested)" if m.kill_requested else ""), exit_text(m)]
            for m in pool.members]
    return table(["NODE", "JOB", "STATE", "EXIT"], rows)


def pool_text(pool: pb.Job) -> str:
    """-check of a pool: its summary, then one row per member (in node order)."""
    return _rows_text(pool_rows(pool)) + "\nmembers:\n" + "\n".join("  " + line for line in members_table(pool).splitlines())


def pool_rows(pool: pb.Job) -> list[tuple[str, str]]:
    """The pool's summary as (label, value) rows (also the web page's)."""
    ended = sum(1 for m in pool.members if m.state in TERMINAL)
    state = outcome(pool) + (" (kill requested)" if pool.kill_requested else "")
    if ended < len(pool.members):
        state += f" ({ended} of {len(pool.members)} members ended)"
    rows = [
        ("id", pool.id),
        ("array", f"{len(pool.members)} member(s), indexes {_index_range(pool)}") if pool.is_array else
        ("pool", f"{len(pool.members)} member(s), one per node ready when it was added"),
        ("state", state),
        ("command", pool.spec.command),
        ("owner", pool.owner or "-"),
        ("created", _when(pool.created_at)),
        ("started", _when(pool.started_at)),
        ("finished", _when(pool.finished_at)),
        ("limits", _limits(pool.spec)),
    ]
    if pool.error:
        rows.append(("reason", pool.error))
    if pool.spec.retries:
        rows.append(("retries", f"{pool.spec.retries} per member"))
    if pool.spec.after:
        rows.append(("after", ", ".join(pool.spec.after)))
    return rows


def _index_range(array: pb.Job) -> str:
    indexes = [m.array_index for m in array.members]
    return f"{min(indexes)}-{max(indexes)}" if indexes else "-"


def job_text(job: pb.Job) -> str:
    if job.is_pool or job.is_array:
        return pool_text(job)
    text = _rows_text(job_rows(job))
    if job.attempts:
        lines = [[str(a["attempt"]), a["node"] or "-", _when(a["started_at"] or 0), _when(a["ended_at"] or 0),
                  a["state"], (a["reason"] or "")[:100]] for a in attempts_json(job)]
        text += "\nattempts:\n" + "\n".join("  " + line for line in
                                            table(["#", "NODE", "STARTED", "ENDED", "STATE", "REASON"], lines).splitlines())
    return text


def attempts_json(job: pb.Job) -> list[dict[str, Any]]:
    """Every attempt of a job that had more than one, oldest first, the current one last."""
    return [attempt_json(a) for a in job.attempts] + [current_attempt_json(job)]


def job_rows(job: pb.Job) -> list[tuple[str, str]]:
    """-check of a job as (label, value) rows (also the web page's)."""
    spec = job.spec
    rows = [
        ("id", job.id),
        ("state", outcome(job) + (" (kill requested)" if job.kill_requested else "")),
        ("command", spec.command or "(the image's Entrypoint and Cmd)"),
        *([("image", spec.image)] if spec.image else []),
        ("owner", job.owner or "-"),
        ("node", job.node or "-"),
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
    ]
    if job.started_at and job.finished_at:
        rows.append(("runtime", f"{job.finished_at - job.started_at:.3f}s"))
    rows.append(("limits", _limits(spec)))
    if job.oom_killed:
        rows.append(("oom", "yes: killed by the kernel OOM killer"))
    if job.HasField("peak_memory_bytes"):
        rows.append(("peak memory", format_size(job.peak_memory_bytes)))
    if job.HasField("cpu_seconds"):
        rows.append(("cpu time", f"{job.cpu_seconds:.3f}s"))
    if job.error:
        rows.append(("reason", job.error))
    for stream, dropped in (("stdout", job.stdout_dropped_bytes), ("stderr", job.stderr_dropped_bytes)):
        if dropped:
            rows.append(("output cut", f"{stream} reached the node's log limit (--max-log-size); "
                                       f"{format_size(dropped)} more was dropped"))
    rows += _network_rows(job)
    if spec.node:
        rows.append(("pinned to", spec.node))
    if job.pool:
        rows.append(("pool", f"member of pool {job.pool}"))
    if job.array:
        rows.append(("array", f"member {job.array_index} of array {job.array}"))
    if spec.after:
        rows.append(("after", ", ".join(spec.after)))
    if job.state == "QUEUED":
        rows.append(("waiting", job.waiting or "for a free slot on a node"))
    if spec.retries or job.attempts:
        rows.append(("attempt", f"{job.attempt} of at most {spec.retries + 1}"))
    return rows


def _network_rows(job: pb.Job) -> list[tuple[str, str]]:
    """-check's rows for the job's network, volumes, working directory and user (only those it set)."""
    spec, rows = job.spec, []
    if spec.net == "bridge":
        rows.append(("net", "bridge" + (f", address {job.address}" if job.address else "")))
    if spec.publish:
        rows.append(("published", ", ".join(spec.publish)))
    if spec.volumes:
        rows.append(("volumes", ", ".join(spec.volumes)))
    if spec.workdir:
        rows.append(("workdir", spec.workdir))
    if spec.run_as:
        rows.append(("runs as", spec.run_as))
    return rows


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def jobs_table(jobs: list[pb.Job]) -> str:
    now = time.time()
    rows = []
    for job in jobs:
        command = job.spec.command.replace("\n", " ")
        node = f"{job.member_count} members" if job.is_array else job.node or "-"  # a folded array
        rows.append([job.id, outcome(job), node, job.owner or "-", _age(now - job.created_at), command[:50]])
    return table(["ID", "STATE", "NODE", "OWNER", "AGE", "COMMAND"], rows)


def nodes_table(nodes: list[pb.Node]) -> str:
    rows = []
    for n in nodes:
        state = n.state or ("prime" if n.prime else "ready")
        if n.prime and state != "prime":
            state += ",prime"
        memory = f"{format_size(n.memory_used_bytes)} / {format_size(n.memory_bytes)}" if n.memory_bytes else "-"
        rows.append([n.name, n.address, state, str(n.capacity), str(n.running), memory])
    return table(["NAME", "ADDRESS", "STATE", "CAPACITY", "RUNNING", "MEMORY (USED / OFFERED)"], rows)


def image_rows(nodes: list[pb.Node]) -> list[tuple[str, str]]:
    """(node, image) for every image of every node that is not gone, by node then image."""
    return [(n.name, image) for n in sorted(nodes, key=lambda n: n.name) if n.state != "gone" for image in n.images]


def images_table(nodes: list[pb.Node]) -> str:
    return table(["NODE", "IMAGE"], [list(row) for row in image_rows(nodes)])


def image_json(node: str, image: str) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "node": node, "image": image}


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"
