"""The worker (every node): takes the jobs assigned to this node, runs them, and says how they
go through its reporter (reporter.py), which writes the records.

Two watches feed it: assign/<me>/ (new jobs: handed to the runtime at once) and kill/ (kill
requests for jobs it runs). At start it reconciles with etcd: a job this node had assigned
before a restart gets the result the earlier run journaled (journal.py) if there is one, is
run if it never reached the runtime, else is recorded LOST (it may have run; it is never run
twice). When this node's lease turns out to have expired, `fence` kills every job whose
record has moved on to another attempt or node before the node registers again, so a job
never has two live attempts that report.

Who calls what: the daemon creates the Launcher with `on_event=worker.on_runtime_event`,
then `start()` (reconcile + watches) and, at shutdown, `stop(kill_running)`.
"""

from __future__ import annotations

import logging
import time

from lclusterd import metrics
from lclusterd.cluster import decode, outcome
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.journal import Journal
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Delete, Event
from lclusterd.cluster.logs import LogFiles
from lclusterd.cluster.reporter import Owned, OwnedJobs, Reporter, same_attempt
from lclusterd.cluster.runspec import NodeDefaults, to_runtime_spec
from lclusterd.cluster.store import Store
from lclusterd.cluster.watch import Callbacks, Watches
from lclusterd.errors import ImageError, InvalidSpec, JobNotFound, RecordError, RuntimeUnavailable, StoreUnavailable
from lclusterd.model import ASSIGNED, RUNNING, JobRecord
from lclusterd.runtime.launcher import Event as RuntimeEvent
from lclusterd.runtime.launcher import JobStarted, Launcher

log = logging.getLogger(__name__)

SHELL_COULD_NOT_RUN = (126, 127)  # its last stderr line says why: quoted in the reason


class Worker:
    def __init__(self, store: Store, watches: Watches, keys: Keys, jobs: Jobs, node: str, launcher: Launcher,
                 defaults: NodeDefaults, logs: LogFiles, journal: Journal):
        self.store = store
        self.watches = watches
        self.keys = keys
        self.jobs = jobs
        self.node = node
        self.launcher = launcher
        self.defaults = defaults
        self.logs = logs
        self.journal = journal
        self.owned = OwnedJobs()
        self.reporter = Reporter(jobs, self.owned, on_fenced=lambda job_id: self.launcher.kill(job_id, 0),
                                 journal=journal, on_final=logs.seal)  # no record re-using its id appends to its logs
        self._kills: set[str] = set()  # kill requests for jobs not (yet) seen assigned here
        self._watches: list = []
        self.accepting = False

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile with etcd (jobs this node ran before a restart), then watch. Call after
        launcher.start(); raises StoreUnavailable if etcd cannot be read."""
        swept = set(self.launcher.sweep())
        if swept:
            log.info("stopped %d job(s) left over by a previous run", len(swept))
        self.reporter.start()
        kill_kvs, kill_rev = self.store.get_prefix(self.keys.kill_prefix, keys_only=True)
        self._kills = {Keys.last(kv.key) for kv in kill_kvs}
        kvs, assign_rev = self.store.get_prefix(self.keys.assign_prefix(self.node), keys_only=True)
        self.accepting = True
        # each key's own tail: a forged one is deleted whole
        assigned = [self.keys.assign_parts(kv.key)[1] for kv in kvs]
        journaled = self._journaled(set(assigned))
        for job_id in assigned:
            self._reconcile(job_id, swept, journaled.get(job_id))
        self._watches = [
            self.watches.watch(self.keys.kill_prefix, kill_rev + 1, Callbacks(self._kill_events, self._resync_kills), "kill"),
            self.watches.watch(self.keys.assign_prefix(self.node), assign_rev + 1,
                               Callbacks(self._assign_events, self._resync_assignments), "assign"),
        ]

    def stop(self, kill_running: bool, timeout: float = 15.0) -> None:
        """Stop taking jobs, kill (or let finish) the running ones, write every result."""
        self.accepting = False
        for watch in self._watches:
            watch.stop()
        self.reporter.shutdown_note = f"stopped by the shutdown of lclusterd on node {self.node}"
        self.launcher.close(kill_running=kill_running, timeout=None)
        self._give_back_unstarted()
        if not self.reporter.stop(timeout):
            log.warning("could not write the states of %d job(s) before stopping (etcd unavailable); the results "
                        "are kept in the journal %s and written when this node starts again", len(self.owned),
                        self.journal.directory)

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
            with self.owned.lock:
                owned = self.owned.get(job_id)
            if owned is not None and owned.submitted:
                continue
            if owned is None and not self._own_unstarted(job_id):
                continue
            self.reporter.report(job_id, outcome.GiveBack())

    def _own_unstarted(self, job_id: str) -> bool:
        """Take on a job assigned here that the watch never delivered (so that it can be given
        back); False if it reached the runtime or is not this node's any more."""
        if self.logs.exist(job_id):
            return False
        try:
            record, revision = self.jobs.get(job_id)
        except (JobNotFound, StoreUnavailable):
            return False
        if record.state != ASSIGNED or record.node != self.node:
            return False
        with self.owned.lock:
            self.owned.add(Owned(record, revision))
        return True

    def kill_all_now(self) -> None:
        """A second shutdown signal while waiting for jobs: kill them after all."""
        for job_id in self.launcher.running():
            self.launcher.kill(job_id, 0)

    def running_count(self) -> int:
        with self.owned.lock:
            return len(self.owned)

    def memory_requested(self) -> int:
        """Bytes requested (-mem) by the jobs this node owns (assigned here or running)."""
        return sum(record.spec.memory_bytes or 0 for record in self.owned.records().values())

    # -- reconcile ---------------------------------------------------------------------------
    def _journaled(self, assigned: set[str]) -> dict[str, JobRecord]:
        """The results an earlier run journaled and could not write, by job id. An entry of a
        job no longer assigned here is done with (etcd has its result after all, or the job
        moved on and the result was rejected) and removed."""
        entries = self.journal.entries()
        for job_id in sorted(entries.keys() - assigned):
            log.info("journal: job %s is no longer assigned to node %s; its entry is removed", job_id, self.node)
            self.journal.remove(job_id)
        return entries

    def _reconcile(self, job_id: str, swept: set[str], journaled: JobRecord | None) -> None:
        try:
            record, revision = self.jobs.get(job_id)
        except JobNotFound:
            record, revision = None, 0
        if record is None or record.terminal or record.node != self.node:
            self.store.txn([], [Delete(self.keys.assign(self.node, job_id))])
            self._drop_journaled(job_id, journaled, record)
            return
        with self.owned.lock:
            owned = self.owned.add(Owned(record, revision))
        if journaled is not None and same_attempt(journaled, record):
            log.info("job %s: writing its result (%s), journaled before lclusterd on node %s restarted", job_id,
                     journaled.state, self.node)
            self.reporter.report(job_id, outcome.Recovered(journaled))
            return
        self._drop_journaled(job_id, journaled, record)
        if record.state == RUNNING:
            reason = (f"lclusterd on node {self.node} restarted while the job was running; its processes were stopped "
                      "and it was not run again")
            self.reporter.report(job_id, outcome.Lost(reason))
        elif job_id in swept or self.logs.exist(job_id):
            reason = (f"lclusterd on node {self.node} restarted after handing the job to the runtime; it may have "
                      "started, so it was not run again")
            self.reporter.report(job_id, outcome.Lost(reason))
        else:
            self._launch(owned)

    def _drop_journaled(self, job_id: str, journaled: JobRecord | None, record: JobRecord | None) -> None:
        """Remove the journaled result of a job whose record ended or moved on (etcd's record is
        the truth); say so unless that record is this very result."""
        if journaled is None:
            return
        self.journal.remove(job_id)
        if record is not None and (record.state, record.finished_at) == (journaled.state, journaled.finished_at):
            return  # it was written after all (the daemon stopped before it could remove the entry)
        now = f"{record.state}, attempt {record.attempt}, node {record.node or '-'}" if record else "deleted"
        log.warning("journal: the %s result of job %s attempt %d is not written: its record is now %s", journaled.state,
                    job_id, journaled.attempt, now)

    # -- watches -----------------------------------------------------------------------------
    def _assign_events(self, events: list[Event]) -> None:
        for event in events:
            if event.kind != "put" or not self.accepting:
                continue
            try:
                record = decode.job(event.key, event.value, event.mod_revision)
            except RecordError:  # not a record of the job its key names (logged once)
                continue
            if record.state != ASSIGNED or record.node != self.node:
                continue
            with self.owned.lock:
                self._take_assignment(record, event.mod_revision)

    def _take_assignment(self, record: JobRecord, revision: int) -> None:
        old = self.owned.get(record.id)
        if old is not None and old.record.attempt >= record.attempt:
            return
        if old is not None:  # a later attempt came back to us while an earlier one still runs here
            log.warning("fencing job %s: attempt %d replaces attempt %d here", record.id, record.attempt, old.record.attempt)
            self.owned.forget(record.id)
            self._stop_copy(record.id)
        self._launch(self.owned.add(Owned(record, revision)))

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
        with self.owned.lock:
            for event in events:
                job_id = Keys.last(event.key)
                if event.kind == "delete":
                    self._kills.discard(job_id)
                    continue
                owned = self.owned.get(job_id)
                if owned is None:
                    self._kills.add(job_id)
                elif not owned.kill_requested:
                    owned.kill_requested = True
                    if owned.submitted:
                        self.launcher.kill(job_id)

    def _resync_kills(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.kill_prefix, keys_only=True)
        self._kill_events([Event("put", kv.key, b"", kv.mod_revision) for kv in kvs])
        return revision

    def fence(self) -> None:
        """Called when this node's lease has expired, before it registers again: kill every
        job whose record no longer names this node and this attempt (the prime declared the
        node dead and re-queued or re-assigned it), and wait a little for those to end."""
        fenced = []
        for job_id, ours in self.owned.records().items():
            try:
                record: JobRecord | None = self.jobs.get(job_id)[0]
            except JobNotFound:
                record = None
            except StoreUnavailable:
                continue  # cannot tell yet; a failing guard on our next write fences it then
            if record is not None and same_attempt(record, ours) and not record.terminal:
                continue
            with self.owned.lock:
                if self.owned.forget(job_id):
                    fenced.append(job_id)
            now = f"{record.state}, attempt {record.attempt}, node {record.node or '-'}" if record else "deleted"
            log.warning("fencing job %s: attempt %d is no longer this node's (now %s); killing our copy", job_id,
                        ours.attempt, now)
            self.launcher.kill(job_id, 0)
            if record is None or record.terminal:
                self.logs.seal(job_id)
        deadline = time.monotonic() + 10
        while fenced and set(fenced) & self.launcher.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _launch(self, owned: Owned) -> None:
        """Hand a newly assigned job to the runtime (or cancel it if a kill came first)."""
        job_id = owned.record.id
        if job_id in self._kills:
            owned.kill_requested = True
            self.reporter.report(job_id, outcome.Cancelled("cancelled by request before it started"))
            return
        try:
            self.logs.create(job_id)
            spec = to_runtime_spec(job_id, owned.record.spec, self.defaults,
                                   str(self.logs.stdout(job_id)), str(self.logs.stderr(job_id)))
            owned.submitted, owned.submitted_at = True, time.monotonic()
            self.launcher.submit(spec)
        except ImageError as exc:  # removed from this node after the job was placed here
            owned.submitted = False
            self.reporter.report(job_id, outcome.Refused(f"node {self.node} cannot run the job's image: {exc}"))
        except (InvalidSpec, RuntimeUnavailable, OSError) as exc:
            owned.submitted = False
            self.reporter.report(job_id, outcome.Refused(f"the runtime on node {self.node} refused the job: {exc}"))

    # -- runtime events ------------------------------------------------------------------------
    def on_runtime_event(self, event: RuntimeEvent) -> None:
        """Called on the launcher's reader thread."""
        if isinstance(event, JobStarted):
            self.reporter.report(event.job_id, outcome.Started(event.host_pid, event.started_at, event.address or ""))
            self._count_start(event)
            return
        result = event.result
        ran = result.finished_at - result.started_at if result.host_pid and result.started_at and result.finished_at else None
        metrics.run_finished(ran, {"stdout": result.stdout_bytes, "stderr": result.stderr_bytes},
                             {"stdout": result.stdout_dropped_bytes, "stderr": result.stderr_dropped_bytes})
        self.logs.mark_ended(result.job_id)  # the log sweep keeps them --keep from now
        tail = self.logs.last_stderr_line(result.job_id) if result.exit_code in SHELL_COULD_NOT_RUN else ""
        self.reporter.report(result.job_id, outcome.Ended(result, tail))

    def _count_start(self, event: JobStarted) -> None:
        owned = self.owned.get(event.job_id)  # a dict read: no lock needed for the numbers
        if owned is None:
            metrics.job_started(None, None)
            return
        created, submitted = owned.record.created_at, owned.submitted_at
        metrics.job_started(event.started_at - created if created else None,
                            time.monotonic() - submitted if submitted else None)
