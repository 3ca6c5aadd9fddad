"""pick_node: the prime first while it has room, then the node with the most free slots."""

import pytest

from lclusterd.cluster.scheduler import pick_node


def test_prime_first_while_it_has_room():
    assert pick_node({"p": 2, "a": 10}, {"p": 1}, "p") == "p"


def test_then_most_free():
    assert pick_node({"p": 2, "a": 10, "b": 4}, {"p": 2, "a": 9, "b": 1}, "p") == "b"


def test_none_when_all_full():
    assert pick_node({"p": 1, "a": 1}, {"p": 1, "a": 1}, "p") is None
    assert pick_node({}, {}, "p") is None


def test_prime_not_registered_yet():
    assert pick_node({"a": 1}, {}, "p") == "a"


def test_a_queue_entry_is_parsed_once_however_often_it_is_looked_at():
    from lclusterd.cluster.scheduler import _Queued
    from lclusterd.model import JobRecord, JobSpec

    record = JobRecord(id="d" * 32, spec=JobSpec(command="true", node="busy"))
    entry = _Queued(record.to_bytes(), 7)
    first = entry.record()
    assert first == record and entry.record() is first and entry.revision == 7
    with pytest.raises(ValueError):
        _Queued(b"not json", 8).record()
