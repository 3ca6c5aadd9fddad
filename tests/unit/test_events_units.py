"""JobEvents without etcd: events fed by hand. A subscription starts from the newest record
the watch delivered (so Wait needs no etcd read), later changes still wake it, and a resync
forgets everything (waiters re-read the store)."""

from __future__ import annotations

from lclusterd.cluster import events as events_module
from lclusterd.cluster.events import JobEvents
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Event

KEYS = Keys("/t")


class RevisionOnly:
    def revision(self) -> int:
        return 99


def put(job_id: str, value: bytes, revision: int) -> Event:
    return Event("put", KEYS.job(job_id), value, revision)


def test_a_subscription_starts_from_the_newest_record_seen_and_wakes_on_later_changes():
    hub = JobEvents(RevisionOnly(), None, KEYS)
    hub.on_events([put("a", b"queued", 5), put("a", b"running", 7)])
    with hub.subscribe("a") as flag, hub.subscribe("b") as unseen:
        assert (flag.latest, flag.revision, flag.is_set()) == (b"running", 7, False)
        assert (unseen.latest, unseen.revision) == (None, 0)
        hub.on_events([put("a", b"exited", 9)])
        assert flag.is_set() and (flag.latest, flag.revision) == (b"exited", 9)
        assert not unseen.is_set()


def test_deleted_and_resynced_jobs_are_forgotten():
    hub = JobEvents(RevisionOnly(), None, KEYS)
    hub.on_events([put("a", b"x", 3), put("b", b"y", 4), Event("delete", KEYS.job("a"), b"", 5)])
    with hub.subscribe("a") as a:
        assert a.latest is None
    with hub.subscribe("b") as b:
        assert b.latest == b"y"
        assert hub.on_resync() == 99
        assert b.is_set() and b.latest is None
    with hub.subscribe("b") as again:
        assert again.latest is None


def test_only_the_most_recent_jobs_are_remembered(monkeypatch):
    monkeypatch.setattr(events_module, "RECENT", 3)
    hub = JobEvents(RevisionOnly(), None, KEYS)
    hub.on_events([put(name, name.encode(), i + 1) for i, name in enumerate("abcd")])
    hub.on_events([put("b", b"b2", 10)])  # b is now the newest; a is gone
    remembered = {}
    for name in "abcd":
        with hub.subscribe(name) as flag:
            remembered[name] = flag.latest
    assert remembered == {"a": None, "b": b"b2", "c": b"c", "d": b"d"}
