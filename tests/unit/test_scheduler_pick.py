"""pick_node: the prime first while it has room, then the node with the most free slots."""

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
