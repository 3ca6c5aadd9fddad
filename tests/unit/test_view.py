"""The prime's ClusterView, pure parts: queue entries and what each node can still take."""

import pytest

from lclusterd.cluster.keys import Keys
from lclusterd.cluster.view import IN_FLIGHT, ClusterView, QueuedJob, Reservation
from lclusterd.errors import RecordError
from lclusterd.model import JobRecord, JobSpec, NodeInfo


def test_a_queue_entry_is_parsed_once_however_often_it_is_looked_at():
    record = JobRecord(id="d" * 32, spec=JobSpec(command="true", node="busy"))
    entry = QueuedJob("/t/queue/" + "d" * 32, record.to_bytes(), 7)
    first = entry.record()
    assert first == record and entry.record() is first and entry.revision == 7 and not entry.skip
    with pytest.raises(RecordError, match="not JSON"):
        QueuedJob("/t/queue/" + "e" * 32, b"not json", 8).record()
    with pytest.raises(RecordError, match="names job id"):  # the record of another job under this key
        QueuedJob("/t/queue/" + "e" * 32, record.to_bytes(), 9).record()


def view() -> ClusterView:
    v = ClusterView(store=None, watches=None, keys=Keys("/t"), on_change=lambda: None)
    v.nodes = {"a": NodeInfo("a", "", 4, memory_bytes=8 << 30), "b": NodeInfo("b", "", 2, memory_bytes=1 << 30)}
    return v


def test_rooms_count_assignments_and_reservations_against_each_nodes_offer():
    v = view()
    v.assigned = {"a": {"j1": 1 << 30, "j2": 0}}
    v.reserve("j3", Reservation("a", IN_FLIGHT, 2 << 30))
    v.draining = {"b"}
    rooms = v.rooms()
    assert (rooms["a"].slots, rooms["a"].memory, rooms["a"].draining) == (1, 5 << 30, False)
    assert (rooms["b"].slots, rooms["b"].memory, rooms["b"].draining) == (2, 1 << 30, True)


def test_a_settled_reservation_stays_until_the_watch_shows_it_and_an_unwritten_one_goes():
    v = view()
    v.assign_revision = 10
    v.reserve("written", Reservation("a", IN_FLIGHT, 0))
    v.reserve("refused", Reservation("a", IN_FLIGHT, 0))
    v.settle("written", 12)
    v.settle("refused", None)
    assert v.reservations == {"written": Reservation("a", 12, 0)}
    v.settle("written-earlier", 5)  # already delivered by the watch: nothing to do
    assert list(v.reservations) == ["written"]


def test_an_entry_is_skipped_only_while_it_is_at_the_revision_tried():
    v = view()
    v.queue["j"] = QueuedJob("/t/queue/j", b"{}", 3)
    v.skip_until_changed("j", 2)
    assert not v.queue["j"].skip
    v.skip_until_changed("j", 3)
    assert v.queue["j"].skip
    v.queue["j"] = QueuedJob("/t/queue/j", b"{}", 4)  # a new event makes a new entry
    assert not v.queue["j"].skip
