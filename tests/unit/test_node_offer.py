"""What a node offers beyond room (cluster/offer.py, placement.Needs, admission): job subnets
claimed in a store with etcd's semantics (memstore), volume roots, and jobs sent only where
their network and volumes can be had."""

from __future__ import annotations

import pytest
from memstore import MemStore

from lclusterd.api.convert import job_to_proto, spec_from_proto, spec_to_proto
from lclusterd.cluster import outcome
from lclusterd.cluster.admission import Admission
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.offer import OfferError, checked_volume_roots, claim_given, claim_subnet, node_offer
from lclusterd.cluster.placement import FIRST_FIT, Needs, Room, place
from lclusterd.cluster.runspec import NodeDefaults, to_runtime_spec
from lclusterd.errors import InvalidSpec, RecordError
from lclusterd.model import ASSIGNED, JobRecord, JobSpec, NodeInfo
from lclusterd.runtime.spec import RunResult

KEYS = Keys("/t")


def test_nodes_sharing_a_store_claim_disjoint_subnets_and_keep_theirs_across_restarts():
    store = MemStore()
    first = claim_subnet(store, KEYS, "a", "10.88.0.0/16")
    second = claim_subnet(store, KEYS, "b", "10.88.0.0/16")
    assert (first, second) == ("10.88.0.0/24", "10.88.1.0/24")
    assert claim_subnet(store, KEYS, "a", "10.88.0.0/16") == first  # a restart takes its own again
    assert store.get(KEYS.subnet(second)).value == b"b"


def test_a_full_range_is_refused_with_what_to_do():
    store = MemStore()
    claim_subnet(store, KEYS, "a", "10.90.0.0/24")
    with pytest.raises(OfferError, match="every /24 of --cluster-subnet 10.90.0.0/24 is claimed by another node"):
        claim_subnet(store, KEYS, "b", "10.90.0.0/24")


def test_a_given_subnet_is_claimed_too_and_claims_keep_clear_of_it():
    store = MemStore()
    claim_given(store, KEYS, "manual", "10.88.0.0/23")
    assert claim_subnet(store, KEYS, "b", "10.88.0.0/16") == "10.88.2.0/24"
    with pytest.raises(OfferError, match="--subnet 10.88.2.0/25 overlaps 10.88.2.0/24, which node b holds"):
        claim_given(store, KEYS, "c", "10.88.2.0/25")


def test_no_bridge_offers_no_network_and_claims_nothing():
    store = MemStore()
    offer = node_offer(store, KEYS, "a", "", "", "10.88.0.0/16", [])
    assert (offer.network, offer.subnet, store.get_prefix(KEYS.subnets_prefix)[0]) == (None, "", [])
    offer = node_offer(store, KEYS, "a", "lclx0", "", "10.88.0.0/16", [])
    assert (offer.network.bridge, offer.subnet) == ("lclx0", "10.88.0.0/24")
    with pytest.raises(OfferError, match="invalid bridge name"):
        node_offer(store, KEYS, "b", "no spaces allowed", "", "10.88.0.0/16", [])
    with pytest.raises(OfferError, match="must be a private range"):
        node_offer(store, KEYS, "b", "lclx1", "", "8.8.0.0/16", [])
    assert [kv.key for kv in store.get_prefix(KEYS.subnets_prefix)[0]] == [KEYS.subnet("10.88.0.0/24")]  # nothing claimed


def test_volume_roots_must_be_clean_absolute_directories(tmp_path):
    assert checked_volume_roots([str(tmp_path)]) == [str(tmp_path)]
    for bad, why in (("data", "absolute"), ("/", "absolute"), (f"{tmp_path}/../x", "absolute"),
                     (str(tmp_path / "missing"), "is not a directory")):
        with pytest.raises(OfferError, match=why):
            checked_volume_roots([bad])


def test_needs_are_met_only_by_a_network_and_roots_that_cover_every_volume():
    needs = Needs.of(JobSpec("x", net="bridge", volumes=["/srv/a/b:/b", "/data:/d:ro"]))
    assert needs == Needs(True, ("/srv/a/b", "/data"))
    assert needs.met_by("10.88.0.0/24", ["/srv/a", "/data"])
    assert not needs.met_by("", ["/srv/a", "/data"])
    assert not needs.met_by("10.88.0.0/24", ["/srv/ab", "/data"])  # a sibling with the same start is not beneath
    assert Needs.of(JobSpec("x")) is None


def test_placement_sends_a_job_only_where_its_needs_are_met_and_says_why_not():
    rooms = {"a": Room("a", 4, 100, 100), "b": Room("b", 4, 100, 100, subnet="10.88.1.0/24", volume_roots=("/srv",))}
    assert place(FIRST_FIT, rooms, "a", needs=Needs(True)) == ("b", "")
    assert place(FIRST_FIT, rooms, "a", needs=Needs(False, ("/srv/x",))) == ("b", "")
    assert place(FIRST_FIT, rooms, "a", needs=Needs(False, ("/data",))) == \
        (None, "volume /data is under no node's --volume-root (allowed: /srv)")
    assert place(FIRST_FIT, rooms, "a", pinned="a", needs=Needs(True)) == \
        (None, "pinned to node a, which offers no -net bridge (started with --bridge '')")
    bare = {"a": Room("a", 4, 100, 100)}
    assert place(FIRST_FIT, bare, "a", needs=Needs(False, ("/data",))) == \
        (None, "no node allows volumes: start lclusterd with --volume-root DIR")


class NoPlacer:
    def reserve(self, job_id, spec):
        return None

    def settle(self, job_id, revision):
        pass


def test_admission_refuses_volumes_no_node_allows_with_how_to_allow_them():
    me = NodeInfo("a", "", 4, subnet="10.88.0.0/24")
    admission = Admission.__new__(Admission)
    admission.me, admission.placer = me, NoPlacer()
    admission._live_nodes = lambda: [me]
    with pytest.raises(InvalidSpec, match="no node allows volumes: start lclusterd with --volume-root DIR"):
        admission.check(JobSpec("x", volumes=["/srv:/srv"]))
    me.volume_roots = ["/data"]
    with pytest.raises(InvalidSpec, match=r"volume /srv is under no node's --volume-root \(allowed: /data\)"):
        admission.check(JobSpec("x", volumes=["/srv:/srv"]))
    admission.check(JobSpec("x", net="bridge", publish=["8080:80"], volumes=["/data/in:/in:ro"], workdir="/in"))
    me.subnet = ""
    with pytest.raises(InvalidSpec, match="no node offers -net bridge"):
        admission.check(JobSpec("x", net="bridge"))


def test_the_spec_and_address_travel_through_records_and_the_api():
    spec = JobSpec("x", net="bridge", publish=["18080:8080/udp"], volumes=["/srv:/srv:ro"], workdir="/srv")
    assert spec_from_proto(spec_to_proto(spec)) == spec
    assert spec_from_proto(spec_to_proto(JobSpec("x"))) == JobSpec("x")
    record = JobRecord(id="a" * 32, spec=spec).moved_to(ASSIGNED, node="n")
    running = outcome.fold(record, [outcome.Started(42, 1.0, "10.88.0.2")])
    assert running.address == "10.88.0.2"
    assert JobRecord.from_bytes(running.to_bytes(), "a" * 32) == running
    assert job_to_proto(running).address == "10.88.0.2"
    ended = outcome.fold(record, [outcome.Ended(RunResult("a" * 32, "EXITED", 0, host_pid=7, started_at=1.0,
                                                          address="10.88.0.3"))])
    assert ended.address == "10.88.0.3"
    assert "net" not in JobSpec("x").to_json() and "address" not in JobRecord(id="b" * 32, spec=JobSpec("x")).to_json()


@pytest.mark.parametrize("field, value, why", [
    ("address", "10.88.0.300", "not an IPv4 address"),
    ("spec.net", "host", "net must be none or bridge"),
    ("spec.publish", ["80"], "publishing a port needs net=bridge"),
    ("spec.volumes", [1], "'volumes' entry is the number 1"),
    ("spec.workdir", "rel", "working directory must be absolute"),
])
def test_records_with_bad_network_fields_are_refused(field, value, why):
    data = JobRecord(id="c" * 32, spec=JobSpec("x")).to_json()
    target = data["spec"] if field.startswith("spec.") else data
    target[field.removeprefix("spec.")] = value
    with pytest.raises(RecordError, match=why):
        JobRecord.from_json(data, "c" * 32)


def test_node_records_with_bad_offers_are_refused():
    good = NodeInfo("a", "", 1, subnet="10.88.0.0/24", volume_roots=["/srv"])
    assert NodeInfo.from_bytes(good.to_bytes(), "a") == good
    for change, why in (({"subnet": "10.88.0.1/24"}, "not an IPv4 network"), ({"volume_roots": ["srv"]}, "absolute")):
        bad = NodeInfo("a", "", 1, **change)
        with pytest.raises(RecordError, match=why):
            NodeInfo.from_bytes(bad.to_bytes(), "a")


def test_the_runtime_spec_gets_network_workdir_and_volumes():
    spec = to_runtime_spec("d" * 32, JobSpec("x", net="bridge", publish=["1:2"], workdir="/w"), NodeDefaults("/r"))
    assert (spec.net, spec.publish, spec.cwd) == ("bridge", ["1:2"], "/w")
    assert to_runtime_spec("d" * 32, JobSpec("x"), NodeDefaults("/r")).cwd == "/"
    job = JobSpec("x", volumes=["/srv:/srv"])
    assert to_runtime_spec("d" * 32, job, NodeDefaults("/r")).volumes == ["/srv:/srv"]


def test_a_pool_that_needs_a_network_has_members_only_on_nodes_that_offer_one():
    from lclusterd.cluster.jobs import Jobs
    from lclusterd.cluster.pools import Pools
    from lclusterd.errors import NoReadyNode

    store = MemStore()
    for info in (NodeInfo("a", "", 2), NodeInfo("b", "", 2, subnet="10.88.1.0/24"), NodeInfo("c", "", 2, subnet="10.88.2.0/24")):
        store.put(KEYS.node(info.name), info.to_bytes())
    pools = Pools(Jobs(store, KEYS))
    pool, members = pools.add(JobSpec("x", net="bridge"))
    assert sorted(pool.members) == ["b", "c"] and sorted(m.spec.node for m in members) == ["b", "c"]
    assert sorted(pools.add(JobSpec("x"))[0].members) == ["a", "b", "c"]
    with pytest.raises(NoReadyNode, match="no ready node offers what it needs"):
        pools.add(JobSpec("x", volumes=["/srv:/srv"]))
