"""Wait's catch-up from the jobs/ watch, without etcd or gRPC's server: JobEvents fed by hand and
the servicer's wait loop (and its Waited). A change the watch delivers while the waiter looks at
the previous one must still be taken up from the watch (not only by the next re-read of etcd,
which for a large array is up to 30 s away); the waiter decodes a record strictly only once it
is terminal or for the answer."""

from __future__ import annotations

import time
from types import SimpleNamespace

from lclusterd.api import waiting
from lclusterd.api.servicer import ApiServices, JobsServicer
from lclusterd.api.waiting import Waited
from lclusterd.cluster.events import JobEvents
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Event
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
