"""The etcd key layout (pure)."""

from lclusterd.cluster.keys import Keys


def test_layout_under_default_prefix():
    k = Keys()
    assert k.job("u") == "/lclusterd/jobs/u"
    assert k.queue("u") == "/lclusterd/queue/u"
    assert k.assign("n1", "u") == "/lclusterd/assign/n1/u"
    assert k.kill("u") == "/lclusterd/kill/u"
    assert k.node("n1") == "/lclusterd/nodes/n1"
    assert k.prime == "/lclusterd/prime"
    assert k.assign_prefix("n1") == "/lclusterd/assign/n1/"
    assert k.jobs_prefix == "/lclusterd/jobs/"
    assert k.pool("u") == "/lclusterd/pools/u"
    assert k.pools_prefix == "/lclusterd/pools/"


def test_prefix_is_normalised():
    assert Keys("x/").job("u") == "/x/jobs/u"
    assert Keys("/a/b/").prime == "/a/b/prime"


def test_parsing_keys():
    k = Keys("/p")
    assert k.assign_parts(k.assign("node-1", "abc")) == ("node-1", "abc")
    assert Keys.last(k.job("abc")) == "abc"


def test_ended_keys_sort_by_end_time_and_range_up_to_a_cutoff():
    k = Keys()
    assert k.ended(1764676800.5, "u") == "/lclusterd/ended/001764676800500/u"
    assert k.removed("u") == "/lclusterd/removed/u"
    assert (k.ended_prefix, k.removed_prefix) == ("/lclusterd/ended/", "/lclusterd/removed/")
    assert k.ended_parts(k.ended(1764676800.5, "u")) == (1764676800.5, "u")
    times = [9.0, 10.0, 99.999, 100.0, 1e10, 5.0]
    keys = sorted(k.ended(t, f"{i:032x}") for i, t in enumerate(times))
    assert [k.ended_parts(key)[0] for key in keys] == sorted(times)  # by end time, not as text
    before = k.ended_before(100.0)  # the range [ended_prefix, before) holds what ended before 100 s
    assert [k.ended_parts(key)[0] for key in keys if k.ended_prefix <= key < before] == [5.0, 9.0, 10.0, 99.999]


def test_prefixes_do_not_overlap():
    k = Keys()
    prefixes = [k.jobs_prefix, k.queue_prefix, k.kill_prefix, k.nodes_prefix, k.assign_all_prefix, k.pools_prefix,
                k.members_prefix, k.drain_prefix, k.ended_prefix, k.removed_prefix]
    for a in prefixes:
        for b in prefixes:
            assert a == b or not a.startswith(b)
    assert not k.prime.startswith(tuple(prefixes))
