"""The shared watch stream against a real etcd: watches under the shared prefix each get their
own sub-prefix's changes in order, one that joins late is re-read and then follows, a watch
outside the prefix still works on its own stream, and both kinds re-read and follow on when
they must resume from a compacted revision."""

from __future__ import annotations

import threading
import uuid

import pytest

from lclusterd.cluster.kv import Event
from lclusterd.cluster.store import Store
from lclusterd.cluster.watch import Callbacks, SharedWatch, Watch, Watches


class Collected:
    def __init__(self, store: Store, prefix: str):
        self.store, self.prefix = store, prefix
        self.keys: list[str] = []
        self.resyncs = 0
        self.changed = threading.Condition()

    def on_events(self, events: list[Event]) -> None:
        with self.changed:
            self.keys.extend(e.key.removeprefix(self.prefix) for e in events)
            self.changed.notify_all()

    def on_resync(self) -> int:
        kvs, revision = self.store.get_prefix(self.prefix)
        with self.changed:
            self.resyncs += 1
            self.keys = [kv.key.removeprefix(self.prefix) for kv in kvs]
            self.changed.notify_all()
        return revision

    def wait_for(self, keys: list[str], timeout: float = 10) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.keys == keys, timeout), (self.keys, keys)


@pytest.fixture
def store(etcd):
    s = Store(etcd.endpoint)
    yield s
    s.close()


@pytest.fixture
def watches(store):
    w = Watches(store)
    yield w
    w.stop()


def test_watches_under_the_shared_prefix_share_one_stream(store, watches):
    root = f"/hub-{uuid.uuid4().hex[:8]}/"
    watches.share(root)
    a, b, other = Collected(store, root + "a/"), Collected(store, root + "b/"), Collected(store, "/elsewhere-" + root[1:])
    start = store.revision() + 1
    shares = [watches.watch(root + "a/", start, Callbacks(a.on_events, a.on_resync)),
              watches.watch(root + "b/", start, Callbacks(b.on_events, b.on_resync))]
    own = watches.watch(other.prefix, start, Callbacks(other.on_events, other.on_resync))
    assert all(isinstance(s, SharedWatch) for s in shares) and isinstance(own, Watch)
    for key in ("a/1", "b/1", "a/2"):
        store.put(root + key, b"x")
    store.put(other.prefix + "z", b"x")
    a.wait_for(["1", "2"])
    b.wait_for(["1"])
    other.wait_for(["z"])
    assert (a.resyncs, b.resyncs) == (0, 0)

    # joins with a start revision the stream has passed: re-read, then only what is new
    late = Collected(store, root + "a/")
    watches.watch(root + "a/", start, Callbacks(late.on_events, late.on_resync))
    assert late.resyncs == 1 and late.keys == ["1", "2"]
    store.put(root + "a/3", b"x")
    late.wait_for(["1", "2", "3"])
    a.wait_for(["1", "2", "3"])

    shares[1].stop()
    store.put(root + "b/2", b"x")
    store.put(root + "a/4", b"x")
    a.wait_for(["1", "2", "3", "4"])  # one stream, in revision order: b/2 would have come first
    assert b.keys == ["1"]
    own.stop()


def test_watches_resume_through_a_re_read_once_their_history_is_compacted(store, watches, etcd):
    root = f"/hub-{uuid.uuid4().hex[:8]}/"
    watches.share(root)
    shared, alone = Collected(store, root + "a/"), Collected(store, "/alone-" + root[1:])
    start = store.revision() + 1
    watches = [watches.watch(shared.prefix, start, Callbacks(shared.on_events, shared.on_resync)),
               watches.watch(alone.prefix, start, Callbacks(alone.on_events, alone.on_resync))]
    store.put(shared.prefix + "1", b"x")
    store.put(alone.prefix + "1", b"x")
    shared.wait_for(["1"])
    alone.wait_for(["1"])

    # both streams have delivered up to here; writes elsewhere move the revision on, and the
    # compaction to it leaves both streams' resume points compacted
    for i in range(5):
        store.put(f"/outside-{root[1:]}{i}", b"x")
    assert store.compact(store.revision())
    assert not store.compact(store.revision() - 1)  # compacted that far already: not an error
    etcd.stop()
    etcd.start()  # both streams break and resume from a compacted revision
    with shared.changed:
        assert shared.changed.wait_for(lambda: shared.resyncs == 1, 20)
    with alone.changed:
        assert alone.changed.wait_for(lambda: alone.resyncs == 1, 20)
    store.put(shared.prefix + "2", b"x")
    store.put(alone.prefix + "2", b"x")
    shared.wait_for(["1", "2"])
    alone.wait_for(["1", "2"])
    assert (shared.resyncs, alone.resyncs) == (1, 1)
    for watch in watches:
        watch.stop()
