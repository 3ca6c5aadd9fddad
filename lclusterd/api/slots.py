"""The server threads a node lends to calls that block: Wait, Logs(follow), Events and Exec
hold one each for as long as they wait. At most MAX_BLOCKING at once on a node, so the threads left keep
add, check and kill answering; and at most MAX_BLOCKING_PER_USER for any one user (a local
member of the group, or a certificate), so that one cannot take them all and leave everyone
else's -wait refused. Admins are held only to the node's total (they may act on every job
anyway), and a peer node's proxied calls too: each stands for a user the node it came through
counted already."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from lclusterd.api.identity import Identity
from lclusterd.errors import TooBusy

MAX_BLOCKING = 192
MAX_BLOCKING_PER_USER = 64


class BlockingSlots:
    def __init__(self, total: int = MAX_BLOCKING, per_caller: int = MAX_BLOCKING_PER_USER):
        self.total, self.per_caller = total, per_caller
        self._lock = threading.Lock()
        self._held = 0
        self._by_caller: dict[str, int] = {}

    @contextmanager
    def held(self, caller: Identity) -> Iterator[None]:
        """A slot for `caller` while the block runs; TooBusy (RESOURCE_EXHAUSTED) when none is left."""
        key = None if caller.node or caller.admin else caller.name
        with self._lock:
            if self._held >= self.total:
                raise TooBusy(f"this node already serves {self.total} waits and follows; try again later")
            if key is not None and self._by_caller.get(key, 0) >= self.per_caller:
                raise TooBusy(f"{caller.label} already has {self.per_caller} waits and follows open on this node "
                              "(the most one user may); end some, or wait for a whole array or pool in one call")
            self._held += 1
            if key is not None:
                self._by_caller[key] = self._by_caller.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
                if key is not None:
                    left = self._by_caller.pop(key) - 1
                    if left:
                        self._by_caller[key] = left
