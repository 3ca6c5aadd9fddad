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


def test_prefixes_do_not_overlap():
    k = Keys()
    prefixes = [k.jobs_prefix, k.queue_prefix, k.kill_prefix, k.nodes_prefix, k.assign_all_prefix, k.pools_prefix,
                k.members_prefix, k.drain_prefix]
    for a in prefixes:
        for b in prefixes:
            assert a == b or not a.startswith(b)
    assert not k.prime.startswith(tuple(prefixes))
