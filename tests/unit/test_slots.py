"""BlockingSlots (api/slots.py): the threads lent to calls that block, at most so many on a
node and at most so many for one user; admins and a peer node's proxied calls are held only
to the node's total."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from lclusterd.api.identity import Identity
from lclusterd.api.slots import BlockingSlots
from lclusterd.errors import TooBusy

ANN, BOB, NODE = Identity("ann"), Identity("bob"), Identity("n2", node=True)


def test_one_caller_cannot_take_every_slot():
    slots = BlockingSlots(total=6, per_caller=2)
    with ExitStack() as held:
        for _ in range(2):
            held.enter_context(slots.held(ANN))
        with pytest.raises(TooBusy, match="user ann already has 2 waits and follows open on this node"):
            held.enter_context(slots.held(ANN))
        held.enter_context(slots.held(BOB))  # others still get theirs
        held.enter_context(slots.held(NODE))  # proxied for a user counted elsewhere
        for _ in range(2):  # an admin, past a user's share
            held.enter_context(slots.held(Identity("boss", admin=True)))
        with pytest.raises(TooBusy, match="this node already serves 6 waits and follows"):
            held.enter_context(slots.held(NODE))
    with slots.held(ANN), slots.held(ANN):  # all given back
        pass
    assert (slots._held, slots._by_caller) == (0, {})


def test_a_slot_is_given_back_when_its_call_fails():
    slots = BlockingSlots(total=1, per_caller=1)
    with pytest.raises(RuntimeError):
        with slots.held(ANN):
            raise RuntimeError("the call failed")
    with slots.held(ANN):
        pass
