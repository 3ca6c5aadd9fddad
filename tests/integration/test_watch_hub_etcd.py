"""The shared watch stream against a real etcd: watches under the shared prefix each get their
own sub-prefix's changes in order, one that joins late is re-read and then follows, and a watch
outside the prefix still works on its own stream."""

from __future__ import annotations

import threading
import uuid

import pytest
from cluster_fixtures import etcd  # noqa: F401 (fixture)

from lclusterd.cluster.store import Callbacks, Event, Store, SharedWatch, Watch


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
        self.resyncs += 1
        kvs, revision = self.store.get_prefix(self.prefix)
        with self.changed:
            self.keys = [kv.key.removeprefix(self.prefix) for kv in kvs]
        return revision

    def wait_for(self, keys: list[str], timeout: float = 10) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.keys == keys, timeout), (self.keys, keys)


@pytest.fixture
def store(etcd):
    s = Store(etcd.endpoint)
    yield s
    s.close()


def test_watches_under_the_shared_prefix_share_one_stream(store):
    root = f"/hub-{uuid.uuid4().hex[:8]}/"
    store.share_watches(root)
    a, b, other = Collected(store, root + "a/"), Collected(store, root + "b/"), Collected(store, "/elsewhere-" + root[1:])
    start = store.revision() + 1
    shares = [store.watch(root + "a/", start, Callbacks(a.on_events, a.on_resync)),
              store.watch(root + "b/", start, Callbacks(b.on_events, b.on_resync))]
    own = store.watch(other.prefix, start, Callbacks(other.on_events, other.on_resync))
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
    store.watch(root + "a/", start, Callbacks(late.on_events, late.on_resync))
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
