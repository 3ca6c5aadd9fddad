"""WatchHub without etcd: responses fed by hand. Each share gets only its prefix's events from
its own start revision on; a share that joins after the stream has passed its start is re-read
first; one handler's failure does not cost the others their events; a compaction resync
re-reads every share and resumes the stream after the oldest read."""

from __future__ import annotations

from lclusterd.cluster.kv import Event
from lclusterd.cluster.watch import WatchHub


class RevisionOnly:
    def __init__(self, revision: int = 50):
        self.current = revision

    def revision(self) -> int:
        return self.current


class Recorder:
    def __init__(self, resync_revision: int = 0, fail: bool = False):
        self.events: list[tuple[str, int]] = []
        self.resyncs = 0
        self.resync_revision = resync_revision
        self.fail = fail

    def on_events(self, events: list[Event]) -> None:
        if self.fail:
            raise RuntimeError("handler bug")
        self.events.extend((e.key, e.mod_revision) for e in events)

    def on_resync(self) -> int:
        self.resyncs += 1
        return self.resync_revision


def put(key: str, revision: int) -> Event:
    return Event("put", key, b"v", revision)


def hub_at(delivered: int) -> WatchHub:
    hub = WatchHub(RevisionOnly(), "/p/")
    hub._delivered = delivered  # as after start() or earlier events
    return hub


def test_each_share_gets_its_prefix_from_its_start_revision():
    hub = hub_at(10)
    jobs, queue = Recorder(), Recorder()
    hub.add("/p/jobs/", 11, jobs)
    hub.add("/p/queue/", 13, queue)
    hub.on_events([put("/p/jobs/a", 11), put("/p/queue/a", 11)])
    hub.on_events([put("/p/jobs/a", 13), put("/p/queue/a", 13), put("/p/nodes/n", 13)])
    assert jobs.events == [("/p/jobs/a", 11), ("/p/jobs/a", 13)]
    assert queue.events == [("/p/queue/a", 13)]  # revision 11 was before its start
    assert (jobs.resyncs, queue.resyncs) == (0, 0)


def test_a_share_joining_behind_the_stream_is_re_read_first_and_gets_no_event_twice():
    hub = hub_at(10)
    hub.on_events([put("/p/queue/a", 12)])  # delivered before the share joined
    late = Recorder(resync_revision=14)
    hub.add("/p/queue/", 11, late)  # its own read was at revision 10: it missed revision 12
    assert late.resyncs == 1
    hub.on_events([put("/p/queue/b", 14), put("/p/queue/c", 15)])  # 14 is covered by its re-read
    assert late.events == [("/p/queue/c", 15)]


def test_a_failing_handler_does_not_cost_the_others_their_events():
    hub = hub_at(0)
    broken, fine = Recorder(fail=True), Recorder()
    hub.add("/p/jobs/", 1, broken)
    hub.add("/p/jobs/", 1, fine)
    hub.on_events([put("/p/jobs/a", 3)])
    assert fine.events == [("/p/jobs/a", 3)]


def test_a_stopped_share_gets_nothing_more():
    hub = hub_at(0)
    gone = Recorder()
    hub.add("/p/jobs/", 1, gone).stop()
    hub.on_events([put("/p/jobs/a", 3)])
    assert gone.events == []


def test_compaction_re_reads_every_share_and_resumes_after_the_oldest_read():
    hub = hub_at(20)
    a, b = Recorder(resync_revision=40), Recorder(resync_revision=35)
    hub.add("/p/a/", 21, a)
    hub.add("/p/b/", 21, b)
    assert hub.on_resync() == 35
    assert (a.resyncs, b.resyncs) == (1, 1)
    hub.on_events([put("/p/a/x", 38), put("/p/b/x", 38), put("/p/a/y", 41)])
    assert a.events == [("/p/a/y", 41)]
    assert b.events == [("/p/b/x", 38)]
