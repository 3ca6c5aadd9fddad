"""Add-time placement on the prime (Scheduler.reserve/settle), with the view fed by hand: only
once the view is loaded, only while nothing is queued, the room is held from reserve until the
assignment shows up in the view (never counted twice), and given back when the add's
transaction did not write the job."""

from __future__ import annotations

from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Event, ModIs
from lclusterd.cluster.placement import Placement
from lclusterd.cluster.scheduler import Scheduler
from lclusterd.model import ASSIGNED, JobRecord, JobSpec, NodeInfo

KEYS = Keys("/t")


def scheduler(capacity: int = 1) -> Scheduler:
    s = Scheduler(None, None, KEYS, None, "p")
    s._prime_revision = 42
    s.view._node_events([Event("put", KEYS.node("p"), NodeInfo("p", "localhost:1", capacity).to_bytes(), 10)])
    s.view.ready = True  # as at the end of ClusterView.load
    return s


def assignment(job_id: str, revision: int) -> Event:
    record = JobRecord(id=job_id, spec=JobSpec(command="true")).moved_to(ASSIGNED, node="p")
    return Event("put", KEYS.assign("p", job_id), record.to_bytes(), revision)


def test_nothing_is_placed_before_the_view_is_loaded():
    s = scheduler()
    s.view.ready = False
    assert s.reserve("a" * 32, JobSpec(command="true")) is None


def test_a_reservation_holds_the_room_with_the_prime_guard_until_settled():
    s = scheduler(capacity=1)
    assert s.reserve("a" * 32, JobSpec(command="true")) == Placement("p", [ModIs(KEYS.prime, 42)])
    assert s.reserve("b" * 32, JobSpec(command="true")) is None  # the one slot is held
    s.settle("a" * 32, None)  # not written: the room comes back
    assert s.reserve("b" * 32, JobSpec(command="true")) is not None


def test_a_written_reservation_is_counted_once_whichever_comes_first():
    s = scheduler(capacity=2)
    s.reserve("a" * 32, JobSpec(command="true"))
    s.settle("a" * 32, 50)  # before its watch event
    s.view._assign_events([assignment("a" * 32, 50)])
    s.reserve("b" * 32, JobSpec(command="true"))
    s.view._assign_events([assignment("b" * 32, 51)])
    s.settle("b" * 32, 51)  # after its watch event
    rooms = s.view.rooms()
    assert rooms["p"].slots == 0
    assert s.reserve("c" * 32, JobSpec(command="true")) is None


def test_an_add_does_not_overtake_queued_jobs_or_a_pending_burial():
    s = scheduler(capacity=4)
    queued = JobRecord(id="q" * 32, spec=JobSpec(command="true"))
    s.view._queue_events([Event("put", KEYS.queue(queued.id), queued.to_bytes(), 20)])
    assert s.reserve("a" * 32, JobSpec(command="true")) is None
    s.view._queue_events([Event("delete", KEYS.queue(queued.id), b"", 21)])
    s.view.dead["gone"] = 22
    assert s.reserve("a" * 32, JobSpec(command="true")) is None
    del s.view.dead["gone"]
    assert s.reserve("a" * 32, JobSpec(command="true")) is not None


def test_a_pin_to_a_full_or_unknown_node_goes_through_the_queue():
    s = scheduler(capacity=1)
    assert s.reserve("a" * 32, JobSpec(command="true", node="elsewhere")) is None
    assert s.reserve("b" * 32, JobSpec(command="true", node="p")) == Placement("p", [ModIs(KEYS.prime, 42)])
