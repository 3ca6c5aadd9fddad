"""The etcd key layout (pure)."""

import json
import random

import pytest

from lclusterd.cluster.keys import Keys, stamp_us


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
                k.members_prefix, k.drain_prefix, k.ended_prefix, k.removed_prefix, k.listed_prefix]
    for a in prefixes:
        for b in prefixes:
            assert a == b or not a.startswith(b)
    assert not k.prime.startswith(tuple(prefixes)) and not k.listed_complete.startswith(tuple(prefixes))


# -- listed/: -list's index ------------------------------------------------------------------------
def test_a_listed_key_inverts_time_index_and_id_in_fixed_width():
    k = Keys()
    key = k.listed(1764676800.123456, 7, "0123456789abcdef0123456789abcdef")
    assert key == "/lclusterd/listed/98235323199876543/9999999992/fedcba9876543210fedcba9876543210"
    assert k.listed_parts(key) == (1764676800123456, 7, "0123456789abcdef0123456789abcdef")
    assert k.listed(5.0, None, "a" * 32) == k.listed(5.0, 0, "a" * 32)  # a job of no array sorts as index 0
    assert k.listed_parts(k.listed(0.0, 2**31 - 1, "f" * 32)) == (0, 2**31 - 1, "f" * 32)
    assert k.listed_parts(k.listed(1e11, 0, "0" * 32))[0] == 10**17 - 1  # records' latest time still fits
    assert k.listed_complete == "/lclusterd/listed-complete" and not k.listed_complete.startswith(k.listed_prefix)


def test_listed_keys_in_key_order_are_the_newest_job_first():
    """Key order is exactly the reverse of -list's (created_at in microseconds, index, id)."""
    rng = random.Random(7)
    k = Keys("/p")
    jobs = []
    for _ in range(3000):
        created = rng.choice([1764676800.0, 1764676800.000001, 0.0, 99.5, 1e10]) + rng.randrange(0, 3) * 1e-6
        index = rng.choice([None, 0, 1, 2, 10, 9, 2**31 - 1])
        jobs.append((created, index, f"{rng.getrandbits(128):032x}"))
    by_key = sorted(jobs, key=lambda job: k.listed(*job))
    assert by_key == sorted(jobs, key=lambda job: (stamp_us(job[0]), job[1] or 0, job[2]), reverse=True)


def test_a_window_of_listed_keys_holds_the_jobs_added_after_a_time_and_a_group_one_microsecond():
    k = Keys("/p")
    stamps = [0, 1, 999_999, 1_000_000, 1_000_001, 1_764_676_800_000_000, 10**17 - 1]
    keys = sorted(k.listed(us / 1e6, i, f"{i:032x}") for us in stamps for i in (0, 3))
    for t in stamps:
        window = [key for key in keys if k.listed_prefix <= key < k.listed_newer_than(t)]
        assert [k.listed_parts(key)[0] for key in window] == sorted((us for us in stamps if us > t for _ in (0, 3)), reverse=True)
        group = [k.listed_parts(key)[:2] for key in keys if key.startswith(k.listed_group(t))]
        assert group == [(t, 3), (t, 0)]


@pytest.mark.parametrize("tail", [
    "", "9823532319987654/9999999992/" + "f" * 32, "98235323199876543/999999999/" + "f" * 32,
    "98235323199876543/9999999992/" + "F" * 32, "98235323199876543/9999999992/" + "f" * 31,
    "98235323199876543/9999999992/" + "f" * 32 + "/x", "9823532319987654\u0663/9999999992/" + "f" * 32,
    "98235323199876543-9999999992-" + "f" * 32, "\udcff" * 8, "98235323199876543/9999999992/" + "g" * 32,
])
def test_a_key_under_listed_that_this_layout_does_not_make_is_refused(tail):
    k = Keys("/p")
    with pytest.raises(ValueError):
        k.listed_parts(k.listed_prefix + tail)
    with pytest.raises(ValueError):
        k.listed_parts(k.jobs_prefix + "98235323199876543/9999999992/" + "f" * 32)


def test_stamps_are_whole_microseconds_and_survive_a_round_trip_through_json():
    for us in (0, 1, 1_764_676_800_123_456, 4_102_444_800_000_001, 99_999_999_999_999_999):
        created = us / 1_000_000
        assert stamp_us(created) == us and stamp_us(json.loads(json.dumps(created))) == us
    assert stamp_us(-5.0) == 0 and stamp_us(2e11) == 10**17 - 1
