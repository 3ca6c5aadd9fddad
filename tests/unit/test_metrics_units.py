"""The metrics without a node: the functions the layers call move the right series, the
scrape-time gauges read what they are given, JobStates keeps the tally and the state changes
of hand-fed watch events, Events' messages are made from those changes, and the endpoint
serves Prometheus' text format. (tests/integration/test_metrics.py scrapes a real node with
a real Prometheus.)"""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from lclusterd import metrics
from lclusterd.api.convert import events_of
from lclusterd.cluster import decode
from lclusterd.cluster.admission import JobQuota
from lclusterd.cluster.jobstates import Feed, JobStates, StateChange
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Event, Put
from lclusterd.metrics.collector import NodeCollector, NodeLoad
from lclusterd.metrics.serve import MetricsServer, MetricsStartError
from lclusterd.errors import QuotaExceeded, RecordError
from lclusterd.model import JobRecord, JobSpec
from memstore import MemStore

KEYS = Keys("/t")
A, B, C = "a" * 32, "b" * 32, "c" * 32  # job ids


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_functions_move_their_series():
    before = {name: value(name) for name in ("lclusterd_jobs_submitted_total", "lclusterd_submit_latency_seconds_count",
                                             "lclusterd_jobs_started_total", "lclusterd_queue_wait_seconds_count",
                                             "lclusterd_spawn_latency_seconds_count", "lclusterd_job_run_seconds_count")}
    metrics.job_submitted(3, 0.002)  # a pool of three: one add
    metrics.job_started(1.5, 0.003)
    metrics.job_started(None, None)  # a start whose waits are not known
    metrics.run_finished(None, {"stdout": 0}, {})  # never started, wrote nothing
    metrics.run_finished(2.0, {"stdout": 10, "stderr": 4}, {"stdout": 7})
    after = {name: value(name) for name in before}
    assert {name: after[name] - before[name] for name in before} == {
        "lclusterd_jobs_submitted_total": 3, "lclusterd_submit_latency_seconds_count": 1,
        "lclusterd_jobs_started_total": 2, "lclusterd_queue_wait_seconds_count": 1,
        "lclusterd_spawn_latency_seconds_count": 1, "lclusterd_job_run_seconds_count": 1}
    assert value("lclusterd_log_written_bytes_total", stream="stdout") >= 10
    assert value("lclusterd_log_cut_bytes_total", stream="stdout") >= 7


def test_bounded_labels_only():
    ended, skipped, other = (value("lclusterd_jobs_ended_total", state="EXITED"),
                             value("lclusterd_records_skipped_total", kind="job"),
                             value("lclusterd_records_skipped_total", kind="other"))
    metrics.job_ended("EXITED")
    metrics.job_ended("RUNNING")  # not a final state: no series for it
    metrics.record_skipped("job")
    metrics.record_skipped("something new")  # an unknown kind counts as other, never a new series
    assert value("lclusterd_jobs_ended_total", state="EXITED") == ended + 1
    assert metrics.REGISTRY.get_sample_value("lclusterd_jobs_ended_total", {"state": "RUNNING"}) is None
    assert value("lclusterd_records_skipped_total", kind="job") == skipped + 1
    assert value("lclusterd_records_skipped_total", kind="other") == other + 1
    assert metrics.REGISTRY.get_sample_value("lclusterd_records_skipped_total", {"kind": "something new"}) is None
    # every final state, result and kind has its series from the start
    for state in ("EXITED", "KILLED", "OOM_KILLED", "TIMED_OUT", "FAILED", "CANCELLED", "LOST"):
        assert metrics.REGISTRY.get_sample_value("lclusterd_jobs_ended_total", {"state": state}) is not None
    for result in metrics.TXN_RESULTS:
        assert metrics.REGISTRY.get_sample_value("lclusterd_etcd_transactions_total", {"result": result}) is not None


def test_transactions_are_counted_by_result():
    before = value("lclusterd_etcd_transactions_total", result="guard_failed")
    metrics.etcd_txn(0.001, "guard_failed")
    assert value("lclusterd_etcd_transactions_total", result="guard_failed") == before + 1


def test_the_node_collector_reads_at_scrape_time():
    load = {"now": NodeLoad(running=2, capacity=8, memory_offered=1000, memory_used=300, prime=True)}
    jobs = {("QUEUED", ""): 3, ("RUNNING", "n1"): 2, ("EXITED", "n2"): 5}
    registry = CollectorRegistry()
    registry.register(NodeCollector("n1", lambda: load["now"], lambda: jobs))
    get = registry.get_sample_value
    assert get("lclusterd_jobs", {"state": "QUEUED", "node": ""}) == 3
    assert get("lclusterd_jobs", {"state": "RUNNING", "node": "n1"}) == 2
    assert get("lclusterd_jobs", {"state": "RUNNING", "node": "n2"}) == 0  # every state of every node seen
    assert get("lclusterd_queue_depth", {}) == 3
    assert get("lclusterd_node_running_jobs", {"node": "n1"}) == 2
    assert get("lclusterd_node_capacity_jobs", {"node": "n1"}) == 8
    assert get("lclusterd_node_memory_offered_bytes", {"node": "n1"}) == 1000
    assert get("lclusterd_node_memory_free_bytes", {"node": "n1"}) == 700
    assert get("lclusterd_node_is_prime", {"node": "n1"}) == 1
    load["now"] = NodeLoad(running=0, capacity=8, memory_offered=1000, memory_used=0, prime=False)
    assert get("lclusterd_node_is_prime", {"node": "n1"}) == 0


class FakeWatches:
    def __init__(self):
        self.handler = None
        self.start = 0

    def watch(self, prefix, start_revision, handler, name=""):
        self.handler, self.start = handler, start_revision
        return self

    def stop(self):
        pass


def record(job_id: str, state: str, node: str = "", **fields) -> bytes:
    return JobRecord(id=job_id, spec=JobSpec(command="true"), state=state, node=node, owner="ann", **fields).to_bytes()


def put(job_id: str, raw: bytes, revision: int = 10) -> Event:
    return Event("put", KEYS.job(job_id), raw, revision)


def started_states(store: MemStore) -> tuple[JobStates, FakeWatches]:
    watches = FakeWatches()
    states = JobStates(store, watches, KEYS)
    states.start()
    return states, watches


def test_job_states_load_then_follow_the_watch():
    store = MemStore()
    store.txn([], [Put(KEYS.job(A), record(A, "QUEUED")), Put(KEYS.job(B), record(B, "EXITED", "n1"))])
    states, watches = started_states(store)
    assert watches.start == store.rev + 1
    assert states.counts() == {("QUEUED", ""): 1, ("EXITED", "n1"): 1}
    with states.listen() as feed:
        watches.handler.on_events([put(A, record(A, "ASSIGNED", "n1")), put(A, record(A, "RUNNING", "n1"))])
        watches.handler.on_events([put(A, record(A, "RUNNING", "n1", waiting=""))])  # same state: no change
        watches.handler.on_events([Event("delete", KEYS.job(B), b"", 12)])  # retention: no change
        changes = feed.take(0)
    assert [(c.record.id, c.previous, c.record.state) for c in changes] == [(A, "QUEUED", "ASSIGNED"), (A, "ASSIGNED", "RUNNING")]
    assert states.counts() == {("RUNNING", "n1"): 1}


def test_job_states_load_a_long_history_in_pages(monkeypatch):
    """jobs/ is read in pages (one read of 100,000 records outgrows etcd's answer): every page
    counted once, at the first page's revision, the watch following from there."""
    from lclusterd.cluster import jobstates
    monkeypatch.setattr(jobstates, "RELOAD_PAGE", 7)
    store = MemStore()
    ids = [f"{i:032x}" for i in range(50)]
    store.txn([], [Put(KEYS.job(i), record(i, "EXITED" if n % 3 else "FAILED", "n1")) for n, i in enumerate(ids)])
    store.txn([], [Put(KEYS.queue(ids[0]), b"x"), Put(KEYS.job("f" * 32), b"{broken")])  # other keys, a bad record
    states, watches = started_states(store)
    assert states.counts() == {("EXITED", "n1"): 33, ("FAILED", "n1"): 17}
    assert watches.start == store.rev + 1


def test_a_record_that_does_not_decode_is_skipped_and_counted():
    states, watches = started_states(MemStore())
    before = value("lclusterd_records_skipped_total", kind="job")
    watches.handler.on_events([put(A, record(A, "RUNNING", "n1"))])
    watches.handler.on_events([put(A, b"{broken", 9001), put(C, json.dumps({"state": "DANCING"}).encode(), 9002)])
    watches.handler.on_events([put(C, json.dumps({"state": "DANCING"}).encode(), 9002)])  # the same again: once
    watches.handler.on_events([put(B, json.dumps({"state": "RUNNING", "node": "a b/c"}).encode(), 9003)])  # no label
    assert value("lclusterd_records_skipped_total", kind="job") == before + 3
    assert states.counts() == {}  # a job whose record broke is no longer counted


def test_records_skipped_by_any_reader_are_counted_once_by_kind():
    kinds = ("job", "queue", "assignment", "node", "pool", "index", "other")
    before = {kind: value("lclusterd_records_skipped_total", kind=kind) for kind in kinds}
    error = RecordError("not a record")
    for key in (KEYS.job(B), KEYS.queue(B), KEYS.assign("jobs", B), KEYS.node("n1"), KEYS.member("n1"), KEYS.pool(B),
                KEYS.prefix + "/odd", KEYS.listed(1.0, 2, B), KEYS.listed_prefix + "odd"):
        decode.skipped(key, 7001, error)
        decode.skipped(key, 7001, error)  # logged and counted once per key and revision
    after = {kind: value("lclusterd_records_skipped_total", kind=kind) - before[kind] for kind in kinds}
    assert after == {"job": 1, "queue": 1, "assignment": 1, "node": 2, "pool": 1, "index": 2, "other": 1}


def test_a_resync_tells_listeners_what_changed_meanwhile():
    store = MemStore()
    store.put(KEYS.job(A), record(A, "RUNNING", "n1"))
    states, watches = started_states(store)
    store.put(KEYS.job(A), record(A, "EXITED", "n1", exit_code=0))  # missed by the watch (compacted)
    store.put(KEYS.job(B), record(B, "QUEUED"))
    with states.listen() as feed:
        assert watches.handler.on_resync() == store.rev
        changes = feed.take(0)
    assert sorted((c.record.id, c.previous, c.record.state) for c in changes) == [(A, "RUNNING", "EXITED"), (B, "", "QUEUED")]
    assert states.counts() == {("EXITED", "n1"): 1, ("QUEUED", ""): 1}


def test_a_feed_that_falls_behind_is_cut_off():
    feed = Feed(limit=2)
    change = StateChange(JobRecord.from_bytes(record(A, "QUEUED"), A), "", 1.0)
    for _ in range(3):
        feed.put(change)
    assert feed.overflowed and len(feed.take(0)) == 2
    feed.put(change)
    assert feed.take(0) == []  # nothing more once cut off


def test_events_of_a_short_job_show_its_start_and_its_end():
    ended = JobRecord.from_bytes(record(A, "EXITED", "n1", exit_code=3, created_at=1.0, assigned_at=2.0,
                                        started_at=3.0, finished_at=4.0, peak_memory_bytes=5), A)
    events = events_of(StateChange(ended, "ASSIGNED", 9.0))
    assert [(e.previous_state, e.job.state, e.time) for e in events] == [("ASSIGNED", "RUNNING", 3.0),
                                                                         ("RUNNING", "EXITED", 4.0)]
    assert not events[0].job.HasField("exit_code") and events[1].job.exit_code == 3
    running = JobRecord.from_bytes(record(A, "RUNNING", "n1", started_at=3.0), A)
    assert [(e.previous_state, e.job.state, e.time) for e in events_of(StateChange(running, "ASSIGNED", 9.0))] == [
        ("ASSIGNED", "RUNNING", 3.0)]
    requeued = JobRecord.from_bytes(record(A, "QUEUED", created_at=1.0), A)
    assert events_of(StateChange(requeued, "RUNNING", 9.0))[0].time == 9.0  # a new attempt: when it was seen
    assert events_of(StateChange(requeued, "", 9.0))[0].time == 1.0  # a new job: when it was added


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_endpoint_serves_prometheus_text():
    server = MetricsServer("127.0.0.1", free_port())
    server.start()
    try:
        server.add(NodeCollector("n9", lambda: NodeLoad(1, 2, 3, 0, False), lambda: {}))
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            text = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain")
        assert "# TYPE lclusterd_jobs_submitted_total counter" in text
        assert 'lclusterd_node_capacity_jobs{node="n9"} 2.0' in text
        with pytest.raises(MetricsStartError, match="Address already in use"):  # the port is taken now
            MetricsServer("127.0.0.1", server.port).start()
    finally:
        server.stop()
    assert metrics.REGISTRY.get_sample_value("lclusterd_node_capacity_jobs", {"node": "n9"}) is None


def test_job_states_count_each_owners_jobs_for_the_quota():
    store = MemStore()
    store.txn([], [Put(KEYS.job(A), record(A, "QUEUED")), Put(KEYS.job(B), record(B, "EXITED", "n1"))])
    states, watches = started_states(store)
    assert (states.owned_by("ann"), states.owned_by("bob")) == (2, 0)
    bobs = JobRecord(id=C, spec=JobSpec(command="true"), state="QUEUED", owner="bob").to_bytes()
    watches.handler.on_events([put(C, bobs), put(A, record(A, "RUNNING", "n1"))])  # a state change counts once
    assert (states.owned_by("ann"), states.owned_by("bob")) == (2, 1)
    watches.handler.on_events([Event("delete", KEYS.job(B), b"", 12)])  # removed by retention: no longer counted
    assert states.owned_by("ann") == 1
    quota = JobQuota(2, states.owned_by)
    quota.check("ann", 1)
    refused = value("lclusterd_quota_refusals_total")
    with pytest.raises(QuotaExceeded, match=r"user ann has 1 jobs .* at most 2 \(--max-jobs-per-user\): this add of 2"):
        quota.check("ann", 2)
    assert value("lclusterd_quota_refusals_total") == refused + 1
    JobQuota(0, states.owned_by).check("ann", 10**6)  # 0: no limit
