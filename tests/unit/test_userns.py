"""Per-job user-namespace ids: the subordinate range is read from the subuid format, and
slots are handed out so that no two live holders (here two nodes sharing a lock dir)
ever get the same ids, and a released slot can be taken again."""

from __future__ import annotations

import errno

import pytest

from lclusterd.runtime.userns import SLOT_SIZE, IdMap, IdRange, Slots, subordinate_range


def test_subordinate_range_is_the_users_first_entry(tmp_path):
    path = tmp_path / "subuid"
    path.write_text("alice:100000:65536\nlclusterd:1000000000:1073741824\nlclusterd:5:5\n")
    assert subordinate_range(path=str(path)) == IdRange(1_000_000_000, 1_073_741_824)
    assert subordinate_range("bob", str(path)) is None
    assert subordinate_range(path=str(tmp_path / "missing")) is None


def test_slots_never_hand_out_the_same_ids_twice_while_held(tmp_path):
    ids = IdRange(1_000_000_000, 3 * SLOT_SIZE + 5)
    node_a, node_b = Slots(ids, ids, str(tmp_path)), Slots(ids, ids, str(tmp_path))
    held = [node_a.acquire(), node_b.acquire(), node_a.acquire()]
    assert sorted(s.ids.uid for s in held) == [1_000_000_000 + i * SLOT_SIZE for i in range(3)]
    assert all(s.ids == IdMap(s.ids.uid, s.ids.uid, SLOT_SIZE) for s in held)
    with pytest.raises(OSError) as full:
        node_b.acquire()
    assert full.value.errno == errno.EAGAIN
    Slots.release(held[1])
    assert node_b.acquire().ids == held[1].ids


def test_a_range_too_small_for_one_slot_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no slot"):
        Slots(IdRange(1, 1000), IdRange(1, 1000), str(tmp_path))
