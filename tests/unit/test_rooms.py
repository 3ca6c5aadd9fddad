"""The prime's placement index (rooms.Rooms) as the view keeps it: running totals moved by
events in whatever order they come, re-reads, reservations settled before and after their
assignment's event, nodes dying and registering again, draining, offers that change; and each
policy's ordered structure on its own. What the index says is compared with the view's rooms(),
built from scratch (the reference), and with a view loaded fresh from the same etcd."""

from __future__ import annotations

import itertools
import random

from memstore import MemStore

from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Event
from lclusterd.cluster.placement import BEST_FIT, FIRST_FIT, POLICIES, PRIME_FIRST, Room
from lclusterd.cluster.rooms import Rooms
from lclusterd.cluster.view import IN_FLIGHT, ClusterView, Reservation
from lclusterd.model import ASSIGNED, JobRecord, JobSpec, NodeInfo

KEYS = Keys("/t")
G = 1 << 30


def node_put(name: str, capacity: int, memory: int, revision: int = 1) -> Event:
    return Event("put", KEYS.node(name), NodeInfo(name, "", capacity, memory_bytes=memory).to_bytes(), revision)


def assign_put(node: str, job: str, memory: int = 0, revision: int = 1) -> Event:
    record = JobRecord(id=job, spec=JobSpec("true", memory_bytes=memory or None)).moved_to(ASSIGNED, node=node)
    return Event("put", KEYS.assign(node, job), record.to_bytes(), revision)


def assign_delete(node: str, job: str, revision: int = 1) -> Event:
    return Event("delete", KEYS.assign(node, job), b"", revision)


def new_view(policy: str = PRIME_FIRST, prime: str = "p", store=None) -> ClusterView:
    return ClusterView(store, None, KEYS, lambda: None, policy, prime)


def deliver(view: ClusterView, event: Event) -> None:
    if event.key.startswith(KEYS.nodes_prefix):
        view._node_events([event])
    elif event.key.startswith(KEYS.drain_prefix):
        view._drain_events([event])
    else:
        view._assign_events([event])


def agrees(view: ClusterView) -> None:
    """The index holds what rooms() builds from the view's sets."""
    rooms = view.rooms()
    assert {name: view.index.room(name) for name in rooms} == rooms
    assert view.free_slots() == sum(max(r.slots, 0) for r in rooms.values() if not r.draining)


def test_events_give_the_same_rooms_in_any_order():
    events = [node_put("a", 3, 4 * G), node_put("b", 2, 2 * G), assign_put("a", "j1", G), assign_put("a", "j2"),
              assign_put("b", "j3", G), assign_put("c", "j4", G), Event("put", KEYS.drain("b"), b"1", 1)]
    for order in itertools.permutations(events):  # every order: assignments before their node too
        view = new_view()
        for event in order:
            deliver(view, event)
        agrees(view)
        assert view.rooms() == {"a": Room("a", 1, 3 * G, 4 * G), "b": Room("b", 1, G, 2 * G, draining=True)}
        assert (view.place(G), view.place(4 * G), view.place(2 * G, pinned="b")) == (
            ("a", ""), (None, ""), (None, "pinned to node b, which is draining"))
        assert view.free_slots() == 1  # b drains; c is not registered


def test_a_re_read_replaces_what_the_events_had_built():
    store = MemStore()
    view = new_view(store=store)
    for event in (node_put("a", 4, 4 * G), node_put("b", 4, 4 * G), assign_put("a", "j1", G),
                  Event("put", KEYS.drain("b"), b"1", 1)):
        deliver(view, event)
    # meanwhile in etcd (events the view never got, compacted away): a is gone, b undrained
    # with j2 and j3 on it, c registered
    store.put(KEYS.node("b"), NodeInfo("b", "", 4, memory_bytes=4 * G).to_bytes())
    store.put(KEYS.node("c"), NodeInfo("c", "", 1, memory_bytes=G).to_bytes())
    for job in ("j2", "j3"):
        store.put(KEYS.assign("b", job), assign_put("b", job, G).value)
    view._read_nodes(), view._read_drains(), view._read_assignments()
    agrees(view)
    fresh = new_view(store=store)
    fresh._read_nodes(), fresh._read_drains(), fresh._read_assignments()
    assert view.rooms() == fresh.rooms() == {"b": Room("b", 2, 2 * G, 4 * G), "c": Room("c", 1, G, G)}
    assert view.place(2 * G) == fresh.place(2 * G) == ("b", "")
    assert view.dead == {"a": store.rev}


def test_a_reservation_is_counted_once_whether_it_settles_before_or_after_its_event():
    for settle_first in (True, False):
        view = new_view()
        deliver(view, node_put("p", 2, 4 * G))
        view.reserve("j", Reservation("p", IN_FLIGHT, G))
        assert view.index.room("p") == Room("p", 1, 3 * G, 4 * G)
        if settle_first:
            view.settle("j", 10)
            deliver(view, assign_put("p", "j", G, 10))
        else:
            deliver(view, assign_put("p", "j", G, 10))
            view.settle("j", 10)
        assert view.index.room("p") == Room("p", 1, 3 * G, 4 * G) and view.reservations == {}
        agrees(view)
        deliver(view, assign_delete("p", "j", 11))  # the job ended
        assert view.index.room("p") == Room("p", 2, 4 * G, 4 * G)


def test_a_reservation_not_written_or_written_elsewhere_gives_its_room_back():
    view = new_view()
    deliver(view, node_put("p", 1, G))
    deliver(view, node_put("q", 1, G))
    view.reserve("j", Reservation("p", IN_FLIGHT, 0))
    view.settle("j", None)
    assert view.index.room("p").slots == 1
    view.reserve("k", Reservation("p", IN_FLIGHT, 0))
    deliver(view, assign_put("q", "k", 0, 5))  # another writer put it on q first
    view.settle("k", None)
    assert (view.index.room("p").slots, view.index.room("q").slots) == (1, 0)
    agrees(view)


def test_a_dead_nodes_jobs_count_when_it_registers_again_until_buried():
    view = new_view(FIRST_FIT)
    deliver(view, node_put("a", 2, 2 * G))
    deliver(view, node_put("b", 2, 2 * G))
    deliver(view, assign_put("a", "j1", G))
    deliver(view, Event("delete", KEYS.node("a"), b"", 5))  # its lease expired
    assert view.index.room("a") is None and view.place() == ("b", "") and view.dead == {"a": 5}
    assert view.place(pinned="a") == (None, "pinned to node a, which is not registered")
    deliver(view, node_put("a", 2, 2 * G, 6))  # back before it was buried: j1 still counts
    assert view.index.room("a") == Room("a", 1, G, 2 * G) and view.place(G) == ("a", "")
    assert view.place(2 * G) == ("b", "")
    deliver(view, assign_delete("a", "j1", 7))  # buried
    assert view.index.room("a") == Room("a", 2, 2 * G, 2 * G)
    agrees(view)


def test_drain_and_undrain():
    view = new_view()
    deliver(view, node_put("p", 2, G))
    drain = Event("put", KEYS.drain("p"), b"1", 2)
    deliver(view, drain)
    assert view.place() == (None, "no ready node: every registered node is draining")
    assert view.free_slots() == 0
    deliver(view, Event("delete", KEYS.drain("p"), b"", 3))
    assert view.place() == ("p", "") and view.free_slots() == 2
    deliver(view, Event("put", KEYS.drain("x"), b"1", 4))  # a node not registered (yet) may drain
    deliver(view, node_put("x", 5, G, 5))
    assert view.place() == ("p", "") and view.free_slots() == 2
    agrees(view)


def test_a_node_registering_with_another_offer_moves_in_every_order():
    for policy in POLICIES:
        view = new_view(policy, prime="none")
        deliver(view, node_put("a", 2, 4 * G))
        deliver(view, node_put("b", 4, 2 * G))
        deliver(view, assign_put("a", "j1", G))
        assert view.place(3 * G) == ("a", ""), policy
        deliver(view, node_put("a", 2, 2 * G))  # restarted with less memory to offer
        assert view.index.room("a") == Room("a", 1, G, 2 * G)
        assert view.place(2 * G) == ("b", ""), policy
        assert view.place(3 * G) == (None, "needs 3.0 GiB of memory; the largest ready node offers 2.0 GiB")
        agrees(view)


def test_names_of_nodes_long_gone_do_not_pile_up():
    rooms = Rooms(FIRST_FIT, "")
    for i in range(100):
        name = f"n{i}"
        rooms.set_node(name, 1, G)
        rooms.use(name, 1, G)
        rooms.remove_node(name)
        rooms.set_draining(name, True)
        rooms.use(name, -1, -G)
        rooms.set_draining(name, False)
    assert rooms._nodes == {} and rooms.live == 0 and rooms.place() == (None, "no node is registered")


def test_first_fit_tree_over_many_nodes_with_avoided_ones():
    rooms = Rooms(FIRST_FIT, "")
    names = [f"n{i:03d}" for i in range(100)]
    for name in random.Random(1).sample(names, len(names)):  # registered in any order
        rooms.set_node(name, 1, G)
    for name in names[:50]:
        rooms.use(name, 1, 0)  # full
    rooms.use("n060", 0, G // 2)
    assert rooms.place() == ("n050", "")
    assert rooms.place(G) == ("n050", "")
    assert rooms.place(G, avoid=["n050", "n051"]) == ("n052", "")
    rooms.use("n050", 1, 0)
    assert rooms.place(3 * G // 4, avoid=["n051"]) == ("n052", "")
    assert rooms.place(G, avoid=names) == ("n051", "")  # every fitting node avoided: the first of them
    rooms.set_node("a-new-first", 1, G)  # a new name: rebuilt at the next placement
    assert rooms.place() == ("a-new-first", "")


def test_prime_first_skips_groups_of_slots_where_the_memory_does_not_fit():
    rooms = Rooms(PRIME_FIRST, "p")
    rooms.set_node("p", 1, G)
    rooms.set_node("big", 8, G)
    rooms.set_node("mid", 4, 4 * G)
    rooms.set_node("small", 2, 8 * G)
    assert rooms.place() == ("p", "") and rooms.place(2 * G) == ("mid", "")
    assert rooms.place(6 * G) == ("small", "") and rooms.place(avoid=["p"]) == ("big", "")
    rooms.use("p", 1, 0)
    assert rooms.place() == ("big", "")
    rooms.set_node("big2", 8, G)
    assert rooms.place() == ("big2", "")  # equal slots and memory: the last name
    assert rooms.place(avoid=["big2", "big", "mid", "small"]) == ("big2", "")


def test_best_fit_takes_the_tightest_then_the_first_name():
    rooms = Rooms(BEST_FIT, "")
    for name, memory in (("c", 3 * G), ("a", 2 * G), ("b", 2 * G), ("d", 8 * G)):
        rooms.set_node(name, 1, memory)
    assert rooms.place(G) == ("a", "") and rooms.place(G, avoid=["a"]) == ("b", "")
    assert rooms.place(3 * G) == ("c", "") and rooms.place(4 * G) == ("d", "")
    rooms.use("d", 1, 0)
    assert rooms.place(4 * G) == (None, "")  # it would fit d's offer, but d is full: wait


def test_first_fit_rebuilds_its_tree_once_per_square_root_of_the_fleet_of_new_names():
    rooms = Rooms(FIRST_FIT, "")
    order = rooms._all.order
    rebuilds = []
    rebuild = order._rebuild
    order._rebuild = lambda: (rebuilds.append(len(order._live)), rebuild())
    for i in range(2500):  # a fleet registering node by node while jobs are placed
        rooms.set_node(f"n{i:04d}", 1, G)
        assert rooms.place() == ("n0000", "")
    assert len(rebuilds) < 2 * 50  # not once per registration: about √N times
    assert order._new and all(name not in order._at for name in order._new)
    for name in list(order._new):
        rooms.remove_node(name)
    assert not order._new  # a node that left waits for nothing
    rooms.set_node("m", 1, G)
    rooms.set_node("zz", 1, G)
    rooms.use("n0000", 1, 0)
    assert rooms.place() == ("m", "") and rooms.place(avoid=["m"]) == ("n0001", "")
    order._rebuild()
    assert not order._new and rooms.place(avoid=["m", "n0001"]) == ("n0002", "")


def test_a_job_with_an_image_goes_only_to_a_node_that_has_it_and_follows_re_registrations():
    for policy in POLICIES:
        rooms = Rooms(policy, "a")
        rooms.set_node("a", 2, G, frozenset({"busybox"}))
        rooms.set_node("b", 2, G, frozenset({"busybox", "debian"}))
        assert rooms.place(image="debian") == ("b", "")
        assert rooms.place(image="nosuch") == (
            None, "no ready node has the image 'nosuch' (lclusterd image import nosuch PATH on a node)")
        assert rooms.place(pinned="a", image="debian") == (None, "pinned to node a, which does not have the image 'debian'")
        rooms.use("b", 2, 0)  # b is full: a debian job waits for a slot, whatever a has
        assert rooms.place(image="debian") == (None, "")
        rooms.use("b", -2, 0)
        rooms.set_node("b", 2, G, frozenset({"busybox"}))  # debian removed from b's store
        assert rooms.place(image="debian")[0] is None
        rooms.set_node("a", 2, G, frozenset({"busybox", "debian"}))  # imported on a
        assert rooms.place(image="debian") == ("a", "")
        rooms.set_draining("a", True)
        assert rooms.place(image="debian") == (None, "every node with the image 'debian' is draining")
        rooms.set_draining("a", False)
        assert rooms.place(4 * G, image="debian") == (
            None, "needs 4.0 GiB of memory; the largest ready node with the image 'debian' offers 1.0 GiB")
        rooms.remove_node("a")
        assert rooms.place(image="debian")[0] is None and rooms.place() == ("b", "")
