"""The worker (every node): runs the jobs assigned to this node and writes how they go.

Two watches feed it: assign/<me>/ (new jobs: handed to the runtime at once) and kill/ (kill
requests for jobs it runs). Runtime events (started, finished) go through one writer thread
that batches them into guarded transactions; a job whose start and end are both pending is
written once. If etcd is unreachable the writer keeps the updates and retries, so no result
is lost. A guard that fails means someone else (a prime that declared the node dead) owns
the job now: the worker kills its copy and forgets it (fencing). The same happens, before the
node registers again, to every job whose record has moved on to another attempt or node when
the node finds its lease expired (`fence`): a job never has two live attempts that report.

Who calls what: the daemon creates the Launcher with `on_event=worker.on_runtime_event`,
then `start()` (reconcile + watches) and, at shutdown, `stop(kill_running)`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from lclusterd.cluster import outcome
from lclusterd.cluster.jobs import Change, Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.linger import Linger
from lclusterd.cluster.logs import LogFiles
from lclusterd.cluster.runspec import NodeDefaults, to_runtime_spec
from lclusterd.cluster.store import Callbacks, Delete, Event, Store, Watch
from lclusterd.errors import InvalidSpec, InvalidTransition, JobNotFound, RuntimeUnavailable, StoreUnavailable
from lclusterd.model import ASSIGNED, RUNNING, JobRecord
from lclusterd.runtime.launcher import JobFinished as RuntimeFinished
from lclusterd.runtime.launcher import JobStarted, Launcher

log = logging.getLogger(__name__)

WRITE_BATCH = 200
_STOP = object()


@dataclass
class _Local:
    """A job this node owns: the record as last written and that write's revision."""

    record: JobRecord
    revision: int
    submitted: bool = False
    kill_requested: bool = False
    updates: list[tuple[str, object]] = field(default_factory=list)  # not yet written


class Worker:
    def __init__(self, store: Store, keys: Keys, jobs: Jobs, node: str, launcher: Launcher,
                 defaults: NodeDefaults, logs: LogFiles):
        self.store = store
        self.keys = keys
        self.jobs = jobs
        self.node = node
        self.launcher = launcher
        self.defaults = defaults
        self.logs = logs
        self._lock = threading.RLock()
        self._local: dict[str, _Local] = {}
        self._kills: set[str] = set()  # kill requests for jobs not (yet) seen assigned here
        self._updates: queue.SimpleQueue = queue.SimpleQueue()
        self._watches: list[Watch] = []
        self._writer = threading.Thread(target=self._write_loop, name="worker writer", daemon=True)
        self._linger = Linger(WRITE_BATCH)  # under load, more updates per transaction
        self._shutdown_note = ""
        self.accepting = False

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile with etcd (jobs this node ran before a restart), then watch. Call after
        launcher.start(); raises StoreUnavailable if etcd cannot be read."""
        swept = set(self.launcher.sweep())
        if swept:
            log.info("stopped %d job(s) left over by a previous run", len(swept))
        self._writer.start()
        kill_kvs, kill_rev = self.store.get_prefix(self.keys.kill_prefix, keys_only=True)
        self._kills = {Keys.last(kv.key) for kv in kill_kvs}
        kvs, assign_rev = self.store.get_prefix(self.keys.assign_prefix(self.node), keys_only=True)
        self.accepting = True
        for kv in kvs:
            self._reconcile(Keys.last(kv.key), swept)
        self._watches = [
            self.store.watch(self.keys.kill_prefix, kill_rev + 1, Callbacks(self._kill_events, self._resync_kills), "kill"),
            self.store.watch(self.keys.assign_prefix(self.node), assign_rev + 1, Callbacks(self._assign_events, self._resync_assignments), "assign"),
        ]

    def stop(self, kill_running: bool, timeout: float = 15.0) -> None:
        """Stop taking jobs, kill (or let finish) the running ones, write every result."""
        self.accepting = False
        for watch in self._watches:
            watch.stop()
        self._shutdown_note = f"stopped by the shutdown of lclusterd on node {self.node}"
        self.launcher.close(kill_running=kill_running, timeout=None)
        self._give_back_unstarted()
        self._updates.put(_STOP)
        self._writer.join(timeout)
        if self._writer.is_alive():
            log.error("could not write the results of %d job(s): etcd unavailable", len(self._local))

    def _give_back_unstarted(self) -> None:
        """Return to the queue every job assigned here that this node never handed to the
        runtime (it was assigned while we were stopping), so another node or our next run
        takes it and it is not left ASSIGNED to a node that is gone."""
        try:
            kvs, _ = self.store.get_prefix(self.keys.assign_prefix(self.node), keys_only=True)
        except StoreUnavailable as exc:
            log.warning("could not give back unstarted jobs: %s", exc)
            kvs = []
        for kv in kvs:
            job_id = Keys.last(kv.key)
            with self._lock:
                local = self._local.get(job_id)
                if local is not None and local.submitted:
                    continue
            if local is None:
                if self.logs.exist(job_id):
                    continue
                try:
                    record, revision = self.jobs.get(job_id)
                except (JobNotFound, StoreUnavailable):
                    continue
                if record.state != ASSIGNED or record.node != self.node:
                    continue
                with self._lock:
                    self._local[job_id] = _Local(record, revision)
            self._updates.put(("give_back", job_id, None))

    def kill_all_now(self) -> None:
        """A second shutdown signal while waiting for jobs: kill them after all."""
        for job_id in self.launcher.running():
            self.launcher.kill(job_id, 0)

    def running_count(self) -> int:
        with self._lock:
            return len(self._local)

    # -- reconcile ---------------------------------------------------------------------------
    def _reconcile(self, job_id: str, swept: set[str]) -> None:
        try:
            record, revision = self.jobs.get(job_id)
        except JobNotFound:
            self.store.txn([], [Delete(self.keys.assign(self.node, job_id))])
            return
        if record.terminal or record.node != self.node:
            self.store.txn([], [Delete(self.keys.assign(self.node, job_id))])
            return
        with self._lock:
            local = self._local[job_id] = _Local(record, revision)
        if record.state == RUNNING:
            reason = f"lclusterd on node {self.node} restarted while the job was running; its processes were stopped and it was not run again"
            self._updates.put(("lost", job_id, reason))
        elif job_id in swept or self.logs.exist(job_id):
            reason = f"lclusterd on node {self.node} restarted after handing the job to the runtime; it may have started, so it was not run again"
            self._updates.put(("lost", job_id, reason))
        else:
            self._launch(local)

    # -- watches -----------------------------------------------------------------------------
    def _assign_events(self, events: list[Event]) -> None:
        for event in events:
            if event.kind != "put" or not self.accepting:
                continue
            job_id = Keys.last(event.key)
            with self._lock:
                try:
                    record = JobRecord.from_bytes(event.value)
                except (ValueError, TypeError, KeyError):
                    log.warning("ignoring a malformed assignment %s", event.key)
                    continue
                if record.state != ASSIGNED or record.node != self.node:
                    continue
                old = self._local.get(job_id)
                if old is not None and old.record.attempt >= record.attempt:
                    continue
                if old is not None:  # a later attempt came back to us while an earlier one still runs here
                    log.warning("fencing job %s: attempt %d replaces attempt %d here", job_id, record.attempt, old.record.attempt)
                    del self._local[job_id]
                    self._stop_copy(job_id)
                local = self._local[job_id] = _Local(record, event.mod_revision)
                self._launch(local)

    def _stop_copy(self, job_id: str, timeout: float = 10) -> None:
        """Kill our copy of a job and wait (bounded) until the runtime has let it go."""
        self.launcher.kill(job_id, 0)
        deadline = time.monotonic() + timeout
        while job_id in self.launcher.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _resync_assignments(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.assign_prefix(self.node))
        self._assign_events([Event("put", kv.key, kv.value, kv.mod_revision) for kv in kvs])
        return revision

    def _kill_events(self, events: list[Event]) -> None:
        with self._lock:
            for event in events:
                job_id = Keys.last(event.key)
                if event.kind == "delete":
                    self._kills.discard(job_id)
                    continue
                local = self._local.get(job_id)
                if local is None:
                    self._kills.add(job_id)
                elif not local.kill_requested:
                    local.kill_requested = True
                    if local.submitted:
                        self.launcher.kill(job_id)

    def _resync_kills(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.kill_prefix, keys_only=True)
        self._kill_events([Event("put", kv.key, b"", kv.mod_revision) for kv in kvs])
        return revision

    def fence(self) -> None:
        """Called when this node's lease has expired, before it registers again: kill every
        job whose record no longer names this node and this attempt (the prime declared the
        node dead and re-queued or re-assigned it), and wait a little for those to end."""
        with self._lock:
            mine = {job_id: local.record for job_id, local in self._local.items()}
        fenced = []
        for job_id, ours in mine.items():
            try:
                record, _ = self.jobs.get(job_id)
            except JobNotFound:
                record = None
            except StoreUnavailable:
                continue  # cannot tell yet; a failing guard on our next write fences it then
            if record is not None and _same_attempt(record, ours) and not record.terminal:
                continue
            with self._lock:
                if self._local.get(job_id) is not None:
                    del self._local[job_id]
                    fenced.append(job_id)
            log.warning("fencing job %s: attempt %d is no longer this node's (now %s); killing our copy", job_id,
                        ours.attempt, f"{record.state}, attempt {record.attempt}, node {record.node or '-'}" if record else "deleted")
            self.launcher.kill(job_id, 0)
        deadline = time.monotonic() + 10
        while fenced and set(fenced) & self.launcher.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _launch(self, local: _Local) -> None:
        """Hand a newly assigned job to the runtime (or cancel it if a kill came first)."""
        job_id = local.record.id
        if job_id in self._kills:
            local.kill_requested = True
            self._updates.put(("cancel", job_id, "cancelled by request before it started"))
            return
        try:
            self.logs.create(job_id)
            spec = to_runtime_spec(job_id, local.record.spec, self.defaults,
                                   str(self.logs.stdout(job_id)), str(self.logs.stderr(job_id)))
            local.submitted = True
            self.launcher.submit(spec)
        except (InvalidSpec, RuntimeUnavailable, OSError) as exc:
            local.submitted = False
            self._updates.put(("refused", job_id, f"the runtime on node {self.node} refused the job: {exc}"))

    # -- runtime events ------------------------------------------------------------------------
    def on_runtime_event(self, event: JobStarted | RuntimeFinished) -> None:
        """Called on the launcher's reader thread."""
        if isinstance(event, JobStarted):
            self._updates.put(("started", event.job_id, event))
        else:
            self.logs.mark_ended(event.result.job_id)  # the log sweep keeps them --keep from now
            self._updates.put(("finished", event.result.job_id, event.result))

    # -- writer ----------------------------------------------------------------------------------
    def _apply(self, local: _Local, kind: str, payload: object) -> JobRecord:
        record = local.record
        if kind == "started":
            return outcome.started(record, payload.host_pid, payload.started_at)
        if kind == "finished":
            tail = self.logs.last_stderr_line(record.id) if payload.exit_code in (126, 127) else ""
            return outcome.ended(record, payload, local.kill_requested, self._shutdown_note, tail)
        if kind == "cancel":
            return outcome.cancelled(record, payload)
        if kind == "refused":
            return outcome.refused(record, payload)
        if kind == "lost":
            return outcome.lost(record, payload)
        raise ValueError(kind)

    def _write_loop(self) -> None:
        dirty: dict[str, None] = {}  # job ids with unwritten updates, in arrival order
        stopping = False
        backoff = 0.0
        while True:
            if stopping and not dirty and self._updates.empty():
                return
            for item in self._take(None if not dirty else backoff):
                if item is _STOP:
                    stopping = True
                    continue
                kind, job_id, payload = item
                with self._lock:
                    local = self._local.get(job_id)
                    if local is not None:
                        local.updates.append((kind, payload))
                        dirty[job_id] = None
            if dirty:
                try:
                    self._flush(dirty)
                    backoff = 0.0
                except StoreUnavailable as exc:
                    log.warning("cannot record job states yet: %s", exc)
                    backoff = min(max(backoff * 2, 0.05), 1.0)

    def _take(self, wait: float | None) -> list:
        """Up to WRITE_BATCH updates; waits `wait` seconds for the first (None: forever)."""
        items = []
        try:
            items.append(self._updates.get_nowait() if wait == 0 else self._updates.get(timeout=wait))
        except queue.Empty:
            return items
        self._linger.before_batch(1 + self._updates.qsize())
        while len(items) < WRITE_BATCH:
            try:
                items.append(self._updates.get_nowait())
            except queue.Empty:
                break
        return items

    def _flush(self, dirty: dict[str, None]) -> None:
        changes: list[Change] = []
        with self._lock:
            for job_id in list(dirty):
                local = self._local.get(job_id)
                change = self._change_for(local) if local is not None else None  # None: fenced meanwhile
                if change is None:
                    del dirty[job_id]
                else:
                    changes.append(change)
        if not changes:
            return
        results = self.jobs.commit(changes)  # StoreUnavailable: everything stays dirty
        self._linger.sent()
        with self._lock:
            for change in changes:
                job_id = change.job_id
                local = self._local.get(job_id)
                revision = results.get(job_id)
                del dirty[job_id]
                if local is None:  # fenced while we wrote
                    continue
                if revision is None:
                    self._fenced(job_id, local)
                    continue
                local.record, local.revision = change.record, revision
                local.updates.clear()
                if change.record.terminal or change.record.state == "QUEUED":
                    del self._local[job_id]

    def _change_for(self, local: _Local) -> Change | None:
        record = local.record
        for kind, payload in local.updates:
            if kind == "retry":
                continue
            if kind == "give_back":
                if local.record is record and record.state == ASSIGNED and not local.submitted:
                    return self.jobs.give_back(record, local.revision)
                continue
            try:
                local.record = self._apply(local, kind, payload)
            except InvalidTransition as exc:
                log.debug("job %s: ignoring %s (%s)", record.id, kind, exc)
        new, local.record = local.record, record
        if new is record:
            local.updates.clear()
            return None
        return self.jobs.finish(new, local.revision) if new.terminal else self.jobs.update(new, local.revision)

    def _fenced(self, job_id: str, local: _Local) -> None:
        """Our guard failed: re-read. If the job is still ours, retry later; else stop our copy."""
        try:
            record, revision = self.jobs.get(job_id)
        except JobNotFound:
            record, revision = None, 0
        except StoreUnavailable:
            self._updates.put(("retry", job_id, None))
            return
        if record is not None and _same_attempt(record, local.record) and record.state in (ASSIGNED, RUNNING):
            local.record, local.revision = record, revision
            self._updates.put(("retry", job_id, None))
            return
        log.warning("job %s attempt %d is no longer this node's (%s); its result is rejected and our copy stopped",
                    job_id, local.record.attempt, f"{record.state}, attempt {record.attempt}" if record else "deleted")
        self.launcher.kill(job_id, 0)
        if self._local.get(job_id) is local:
            del self._local[job_id]


def _same_attempt(record: JobRecord, ours: JobRecord) -> bool:
    """Whether etcd's `record` is still the attempt this node runs (fencing by attempt number)."""
    return record.node == ours.node and record.attempt == ours.attempt

