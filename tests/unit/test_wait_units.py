"""Wait's catch-up from the jobs/ watch, without etcd or gRPC's server: JobEvents fed by hand and
the servicer's wait loop. A change the watch delivers while the waiter decodes the previous one
must still be taken up from the watch (not only by the next re-read of etcd, which for a large
array is up to 30 s away)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from lclusterd.api import servicer as servicer_module
from lclusterd.api.servicer import ApiServices, JobsServicer
from lclusterd.cluster import decode
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


def test_a_change_delivered_while_the_waiter_decodes_the_previous_one_is_not_lost(monkeypatch):
    a, b = new_job_id(), new_job_id()
    running, exited_a, exited_b = record(a, RUNNING), record(a, EXITED), record(b, EXITED)
    hub = JobEvents(None, None, KEYS)
    hub.on_events([put(running, 7), put(exited_b, 8)])
    real_job = decode.job
    delivered = []

    def job_racing_the_watch(key: str, raw: bytes, revision: int = 0) -> JobRecord:
        decoded = real_job(key, raw, revision)
        if decoded.id == a and decoded.state == RUNNING and not delivered:  # the watch thread runs just now
            delivered.append(True)
            hub.on_events([put(exited_a, 9)])
        return decoded

    monkeypatch.setattr(servicer_module.decode, "job", job_racing_the_watch)
    reads = []

    def read() -> list[tuple[JobRecord, int]]:  # etcd: only when the watch did not bring a record
        reads.append(time.monotonic())
        return [(exited_a, 9), (exited_b, 8)]

    states = servicer_over(hub)._wait_ended([a, b], read, lambda records: [r.state for r in records],
                                             time.monotonic() + 30, 30, Active())
    assert delivered and states == [EXITED, EXITED]
    assert reads == [], "the waiter missed the watch's change and waited for a re-read of etcd"
