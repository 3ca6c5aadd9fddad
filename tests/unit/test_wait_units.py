"""Wait's catch-up from the jobs/ watch, without etcd or gRPC's server: JobEvents fed by hand and
the servicer's wait loop (and its Waited). A change the watch delivers while the waiter looks at
the previous one must still be taken up from the watch (not only by the next re-read of etcd,
which for a large array is up to 30 s away); the waiter decodes a record strictly only once it
is terminal or for the answer."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from lclusterd.api import waiting
from lclusterd.api.identity import Identity
from lclusterd.api.servicer import ApiServices, JobsServicer
from lclusterd.api.waiting import Waited
from lclusterd.cluster.events import JobEvents
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Event
from lclusterd.cluster.lookup import FoundJob
from lclusterd.errors import NotAllowed
from lclusterd.model import EXITED, RUNNING, JobRecord, JobSpec, new_job_id

KEYS = Keys("/t")


class Active:
    def is_active(self) -> bool:
        return True


def record(job_id: str, state: str) -> JobRecord:
    return JobRecord(id=job_id, spec=JobSpec(command="true"), state=state, node="n", created_at=1.0)


def put(rec: JobRecord, revision: int) -> Event:
    return Event("put", KEYS.job(rec.id), rec.to_bytes(), revision)


def servicer_over(hub: JobEvents) -> JobsServicer:
    services = ApiServices(node="n", jobs=SimpleNamespace(keys=KEYS), admission=None, lookup=SimpleNamespace(pools=None),
                           nodes=None, events=hub, logs=None, peers=None, states=None)
    return JobsServicer(services, authenticator=None)


def test_a_change_delivered_while_the_waiter_looks_at_the_previous_one_is_not_lost(monkeypatch):
    a, b = new_job_id(), new_job_id()
    running, exited_a, exited_b = record(a, RUNNING), record(a, EXITED), record(b, EXITED)
    hub = JobEvents(None, None, KEYS)
    hub.on_events([put(running, 7), put(exited_b, 8)])
    real_state = waiting._state
    delivered = []

    def state_racing_the_watch(raw: bytes) -> str:
        state = real_state(raw)
        if state == RUNNING and not delivered:  # the watch thread runs just now
            delivered.append(True)
            hub.on_events([put(exited_a, 9)])
        return state

    monkeypatch.setattr(waiting, "_state", state_racing_the_watch)
    reads = []

    def read() -> list[tuple[JobRecord, int]]:  # etcd: only when the watch did not bring a record
        reads.append(time.monotonic())
        return [(exited_a, 9), (exited_b, 8)]

    states = servicer_over(hub)._wait_ended([a, b], read, lambda records: [r.state for r in records],
                                             time.monotonic() + 30, 30, Active())
    assert delivered and states == [EXITED, EXITED]
    assert reads == [], "the waiter missed the watch's change and waited for a re-read of etcd"


def test_only_terminal_records_are_decoded_and_a_malformed_one_sends_the_waiter_to_etcd(monkeypatch):
    a, b = new_job_id(), new_job_id()
    decoded = []
    real_job = waiting.decode.job
    monkeypatch.setattr(waiting.decode, "job", lambda key, raw, revision=0: decoded.append(raw) or real_job(key, raw, revision))
    watched = Waited(KEYS, [a, b])
    assert watched.watched(0, (record(a, RUNNING).to_bytes(), 5)) and watched.left == 2 and decoded == []
    assert watched.watched(1, (record(b, EXITED).to_bytes(), 6)) and watched.left == 1 and len(decoded) == 1
    assert watched.watched(1, (b"stale", 6))  # not newer: not looked at
    assert not watched.watched(0, (b'{"state":"EXITED"}', 7))  # terminal but not a record: read etcd
    assert watched.watched(0, (record(a, EXITED).to_bytes(), 8)) and watched.left == 0
    assert [r.state for r in watched.records()] == [EXITED, EXITED]
    assert not watched.watched(0, (None, 9)), "a record the watch forgot (a resync) sends the waiter to etcd"


def test_a_group_subscription_queues_the_places_whose_job_changed():
    a, b, c = new_job_id(), new_job_id(), new_job_id()
    hub = JobEvents(None, None, KEYS)
    with hub.subscribe_many([a, b, c]) as flags, hub.subscribe(b) as alone:
        hub.on_events([put(record(c, RUNNING), 3), put(record(a, RUNNING), 4), put(record(c, EXITED), 5)])
        assert list(flags[0].touched) == [2, 0, 2] and flags[0].changed.is_set()
        assert alone.touched is None and not alone.is_set()


class Unreachable:
    """A lookup that must not be used: etcd is not read for what the watch brought."""

    pools = None

    def __init__(self, found=None):
        self.calls, self._found = [], found

    def resolve(self, job_id: str):
        self.calls.append(job_id)
        if self._found is None:
            raise AssertionError(f"etcd read for {job_id}")
        return self._found


def waiter_over(hub: JobEvents, lookup, caller: Identity) -> JobsServicer:
    services = ApiServices(node="n", jobs=SimpleNamespace(keys=KEYS), admission=None, lookup=lookup,
                           nodes=None, events=hub, logs=None, peers=None, states=None)
    return JobsServicer(services, authenticator=SimpleNamespace(identify=lambda context: caller))


def owned(job_id: str, state: str, owner: str) -> JobRecord:
    return JobRecord(id=job_id, spec=JobSpec(command="true"), state=state, node="n", created_at=1.0, owner=owner)


def test_wait_finds_a_job_the_watch_brought_without_reading_etcd_and_still_checks_its_owner():
    job = new_job_id()
    hub = JobEvents(None, None, KEYS)
    hub.on_events([Event("put", KEYS.job(job), owned(job, EXITED, "alice").to_bytes(), 12)])
    found = waiter_over(hub, Unreachable(), Identity("alice"))._resolve_for(None, job, "wait for", watched=True)
    assert isinstance(found, FoundJob) and (found.record.state, found.revision) == (EXITED, 12)
    with pytest.raises(NotAllowed, match="user bob may not wait for"):
        waiter_over(hub, Unreachable(), Identity("bob"))._resolve_for(None, job, "wait for", watched=True)


def test_wait_reads_etcd_when_the_watch_has_no_record_or_a_malformed_one_and_check_always_does():
    job, other = new_job_id(), new_job_id()
    hub = JobEvents(None, None, KEYS)
    hub.on_events([Event("put", KEYS.job(job), b'{"state":"EXITED","owner":"alice"}', 5)])  # forged: no id, no spec
    from_etcd = FoundJob(owned(job, EXITED, "alice"), 5)
    for job_id, watched in ((job, True), (other, True), (job, False)):
        lookup = Unreachable(from_etcd)
        assert waiter_over(hub, lookup, Identity("alice"))._resolve_for(None, job_id, "see", watched) is from_etcd
        assert lookup.calls == [job_id]


def test_a_record_already_found_is_not_decoded_again_and_a_newer_one_from_the_watch_wins(monkeypatch):
    job = new_job_id()
    exited = record(job, EXITED)
    hub = JobEvents(None, None, KEYS)
    hub.on_events([put(exited, 7)])
    decoded = []
    real_job = waiting.decode.job
    monkeypatch.setattr(waiting.decode, "job", lambda key, raw, revision=0: decoded.append(raw) or real_job(key, raw, revision))

    def unread() -> list[tuple[JobRecord, int]]:
        raise AssertionError("etcd read")

    answer = servicer_over(hub)._wait_ended([job], unread, lambda records: records[0], time.monotonic() + 5, 5, Active(),
                                            known=[(exited, 7)])
    assert answer is exited and decoded == []  # Wait found it in the watch's record already: one decode, not two
    running = record(job, RUNNING)  # found while running; the watch has brought its end since
    answer = servicer_over(hub)._wait_ended([job], unread, lambda records: records[0], time.monotonic() + 5, 5, Active(),
                                            known=[(running, 5)])
    assert (answer.state, len(decoded)) == (EXITED, 1)
