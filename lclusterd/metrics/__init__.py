"""The node's Prometheus metrics: the instruments, and the plain functions the layers call
to feed them (the cluster layer, the store, the worker; anyone may call `record_skipped`).

One registry per process (REGISTRY), served by serve.py on --metrics-listen and read at
scrape time by collector.py for what is a state rather than an event (jobs by state, the
node's load, whether it is the prime). Everything here counts or times; nothing names a job
(no job id, command or owner as a label), so what a scrape shows is numbers only.

Names follow Prometheus' conventions: the unit in the name (`_seconds`, `_bytes`), `_total`
on counters (prometheus_client adds it), labels from small fixed sets (a job state, a log
stream, an etcd outcome, a record kind). Each call costs about a microsecond (a lock and an
add); the hot paths call at most a few per job (bench/cluster.py measures it).

docs/operations.md lists every metric with its type, labels and meaning.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import PlatformCollector, ProcessCollector, disable_created_metrics

from lclusterd.states import TERMINAL

__all__ = ["REGISTRY", "RECORD_KINDS", "STREAMS", "TXN_RESULTS", "etcd_txn", "exec_started", "job_ended", "job_started",
           "job_submitted", "log_space_evicted", "quota_refused", "record_skipped", "run_finished"]

disable_created_metrics()  # no `_created` series beside every counter and histogram (a process-wide switch)
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
PlatformCollector(registry=REGISTRY)  # python_info

STREAMS = ("stdout", "stderr")
TXN_RESULTS = ("committed", "guard_failed", "error")  # a write transaction: applied, a compare failed, no answer
# What a record skipped as invalid was (anything else counts as "other", so the label stays bounded).
RECORD_KINDS = ("job", "queue", "assignment", "node", "pool", "kill", "drain", "tombstone", "index", "other")

# Buckets (seconds). Latencies are milliseconds on an idle node and may grow to seconds under
# load; a queue wait can last hours, a run days.
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAIT = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
         3600.0, 14400.0, 86400.0)
_RUN = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0, 604800.0)

_SUBMITTED = Counter("lclusterd_jobs_submitted", "Jobs added through this node (a pool counts each member).",
                     registry=REGISTRY)
_STARTED = Counter("lclusterd_jobs_started", "Jobs this node's runtime started (their command was exec'd).",
                   registry=REGISTRY)
_ENDED = Counter("lclusterd_jobs_ended", "Final states this node wrote: its own jobs' ends, queued jobs it cancelled "
                 "and, as the prime, jobs it recorded LOST.", ["state"], registry=REGISTRY)
_SUBMIT_SECONDS = Histogram("lclusterd_submit_latency_seconds", "An add on this node, from the request until the job "
                            "is durably in etcd (queued or assigned).", buckets=_FAST, registry=REGISTRY)
_QUEUE_WAIT = Histogram("lclusterd_queue_wait_seconds", "Jobs started here: from added (created_at) to running "
                        "(started_at).", buckets=_WAIT, registry=REGISTRY)
_SPAWN_SECONDS = Histogram("lclusterd_spawn_latency_seconds", "Jobs started here: from the hand-over to the runtime "
                           "until the command was exec'd.", buckets=_FAST, registry=REGISTRY)
_RUN_SECONDS = Histogram("lclusterd_job_run_seconds", "Jobs that ran here: from started to ended.", buckets=_RUN,
                         registry=REGISTRY)
_TXNS = Counter("lclusterd_etcd_transactions", "etcd write transactions this node sent, by result.", ["result"],
                registry=REGISTRY)
_TXN_SECONDS = Histogram("lclusterd_etcd_transaction_seconds", "etcd write transactions: round trip, retries on "
                         "other members included.", buckets=_FAST, registry=REGISTRY)
_SKIPPED = Counter("lclusterd_records_skipped", "Records this node read from etcd and skipped as invalid, by kind.",
                   ["kind"], registry=REGISTRY)
_LOG_WRITTEN = Counter("lclusterd_log_written_bytes", "Output of jobs that ran here kept in their log files.",
                       ["stream"], registry=REGISTRY)
_LOG_CUT = Counter("lclusterd_log_cut_bytes", "Output of jobs that ran here dropped past --max-log-size.", ["stream"],
                   registry=REGISTRY)

_QUOTA_REFUSED = Counter("lclusterd_quota_refusals", "Adds this node refused because the user had --max-jobs-per-user "
                         "jobs in the cluster.", registry=REGISTRY)
_LOG_EVICTED = Counter("lclusterd_log_space_evictions", "Ended jobs whose output this node replaced by a line to keep its "
                       "logs within --max-log-space.", registry=REGISTRY)
_EXECS = Counter("lclusterd_execs", "Commands run inside running jobs on this node (lclient -exec).", registry=REGISTRY)

# Children bound once: every series exists from the start (at 0), and a call is no label lookup.
_ENDED_BY = {state: _ENDED.labels(state) for state in sorted(TERMINAL)}
_TXNS_BY = {result: _TXNS.labels(result) for result in TXN_RESULTS}
_SKIPPED_BY = {kind: _SKIPPED.labels(kind) for kind in RECORD_KINDS}
_WRITTEN_BY = {stream: _LOG_WRITTEN.labels(stream) for stream in STREAMS}
_CUT_BY = {stream: _LOG_CUT.labels(stream) for stream in STREAMS}


def job_submitted(jobs: int, seconds: float) -> None:
    """An add written: `jobs` jobs (a pool's members) in `seconds` from the request."""
    _SUBMITTED.inc(jobs)
    _SUBMIT_SECONDS.observe(seconds)


def job_started(queue_wait: float | None, spawn: float | None) -> None:
    """The runtime started a job of this node; the waits where known (None: not measured)."""
    _STARTED.inc()
    if queue_wait is not None:
        _QUEUE_WAIT.observe(max(queue_wait, 0.0))  # wall clocks of two nodes may disagree a little
    if spawn is not None:
        _SPAWN_SECONDS.observe(spawn)


def job_ended(state: str) -> None:
    """This node wrote a job's final `state` (one of states.TERMINAL)."""
    counter = _ENDED_BY.get(state)
    if counter is not None:
        counter.inc()


def run_finished(run_seconds: float | None, written: dict[str, int], cut: dict[str, int]) -> None:
    """A run of this node ended: how long its command ran (None: it never started) and its
    output by stream, kept and dropped."""
    if run_seconds is not None:
        _RUN_SECONDS.observe(max(run_seconds, 0.0))
    for stream, count in written.items():
        if count and stream in _WRITTEN_BY:
            _WRITTEN_BY[stream].inc(count)
    for stream, count in cut.items():
        if count and stream in _CUT_BY:
            _CUT_BY[stream].inc(count)


def etcd_txn(seconds: float, result: str) -> None:
    """One etcd write transaction: its round trip and result (one of TXN_RESULTS)."""
    _TXNS_BY[result].inc()
    _TXN_SECONDS.observe(seconds)


def record_skipped(kind: str) -> None:
    """A record read from etcd was skipped as invalid. `kind` says what it was (RECORD_KINDS;
    anything else is counted as "other"). Never raises: call it from any layer, any thread."""
    _SKIPPED_BY.get(kind, _SKIPPED_BY["other"]).inc()


def quota_refused() -> None:
    """An add refused: its user had as many jobs in the cluster as --max-jobs-per-user allows."""
    _QUOTA_REFUSED.inc()


def log_space_evicted(jobs: int) -> None:
    """The output of `jobs` ended jobs was replaced to keep the logs within --max-log-space."""
    _LOG_EVICTED.inc(jobs)


def exec_started() -> None:
    """A command was started inside one of this node's running jobs (lclient -exec)."""
    _EXECS.inc()
