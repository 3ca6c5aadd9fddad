"""Scheduling policies and the lost-attempt record (pure)."""

import pytest

from lclusterd.cluster.placement import BEST_FIT, FIRST_FIT, PRIME_FIRST, Room, place
from lclusterd.errors import InvalidTransition
from lclusterd.model import ASSIGNED, EXITED, LOST, QUEUED, RUNNING, JobRecord, JobSpec

G = 1 << 30


def rooms(*specs):
    return {name: Room(name, slots, free, offered, draining) for name, slots, free, offered, draining in specs}


def test_prime_first_then_most_free_slots():
    r = rooms(("p", 1, G, G, False), ("a", 3, G, G, False), ("b", 5, G, G, False))
    assert place(PRIME_FIRST, r, "p") == ("p", "")
    r["p"].slots = 0
    assert place(PRIME_FIRST, r, "p") == ("b", "")


def test_prime_first_with_no_room_anywhere_or_no_prime_registered():
    r = rooms(("p", 0, G, G, False), ("a", 0, G, G, False))
    assert place(PRIME_FIRST, r, "p") == (None, "")
    assert place(PRIME_FIRST, rooms(("a", 1, G, G, False)), "p") == ("a", "")
    assert place(PRIME_FIRST, {}, "p") == (None, "no node is registered")


def test_first_fit_and_best_fit_by_memory():
    r = rooms(("a", 4, 1 * G, 8 * G, False), ("b", 4, 3 * G, 8 * G, False), ("c", 4, 6 * G, 8 * G, False))
    assert place(FIRST_FIT, r, "x", 2 * G) == ("b", "")
    assert place(BEST_FIT, r, "x", 2 * G) == ("b", "")
    assert place(BEST_FIT, r, "x", 4 * G) == ("c", "")
    assert place(FIRST_FIT, r, "x", 512 << 20) == ("a", "")


def test_busy_waits_silently_but_too_big_says_why():
    r = rooms(("a", 0, G, G, False))
    assert place(FIRST_FIT, r, "a") == (None, "")
    node, why = place(FIRST_FIT, r, "a", 2 * G)
    assert node is None and why == "needs 2.0 GiB of memory; the largest ready node offers 1.0 GiB"


def test_draining_nodes_and_pins():
    r = rooms(("a", 2, G, G, True), ("b", 2, G, G, False))
    assert place(PRIME_FIRST, r, "a") == ("b", "")
    assert place(PRIME_FIRST, r, "a", pinned="a") == (None, "pinned to node a, which is draining")
    assert place(PRIME_FIRST, r, "a", pinned="zz") == (None, "pinned to node zz, which is not registered")
    assert place(PRIME_FIRST, r, "a", pinned="b") == ("b", "")
    r["b"].draining = True
    assert place(PRIME_FIRST, r, "a") == (None, "no ready node: every registered node is draining")
    assert place(PRIME_FIRST, {}, "a") == (None, "no node is registered")


def test_retry_avoids_the_node_it_was_lost_on_when_it_can():
    r = rooms(("a", 2, G, G, False), ("b", 2, G, G, False))
    assert place(FIRST_FIT, r, "a", avoid=["a"]) == ("b", "")
    r["b"].slots = 0
    assert place(FIRST_FIT, r, "a", avoid=["a"]) == ("a", "")


def test_lost_attempt_is_requeued_while_retries_allow():
    record = JobRecord(id="a" * 32, spec=JobSpec("true", retries=1), state=RUNNING, node="n1", started_at=5.0)
    again = record.lost_on("node n1 was lost", now=9.0)
    assert (again.state, again.attempt, again.node, again.started_at) == (QUEUED, 2, "", None)
    assert again.history == [{"attempt": 1, "node": "n1", "assigned_at": None, "started_at": 5.0, "ended_at": 9.0,
                              "state": LOST, "reason": "node n1 was lost"}]
    second = again.moved_to(ASSIGNED, node="n2").lost_on("node n2 was lost", now=10.0)
    assert (second.state, second.attempt, second.error, second.finished_at) == (LOST, 2, "node n2 was lost", 10.0)
    assert len(second.history) == 1


def test_at_most_once_by_default_and_never_for_a_finished_job():
    record = JobRecord(id="a" * 32, spec=JobSpec("true"), state=ASSIGNED, node="n1")
    assert record.lost_on("gone").state == LOST
    with pytest.raises(InvalidTransition):
        JobRecord(id="a" * 32, spec=JobSpec("true", retries=3), state=EXITED).lost_on("gone")
