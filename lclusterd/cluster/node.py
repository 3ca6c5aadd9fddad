"""NodeSession: this node's registration under nodes/<name>, held by a lease with keep-alive.

The same lease also holds the prime key while this node is prime, so one lease is the
node's whole liveness. If the lease is lost (etcd unreachable for longer than its TTL), the
session grants a new one, re-registers, and tells its listeners (the prime election).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from lclusterd.cluster.keys import Keys
from lclusterd.cluster.store import Put, Store
from lclusterd.errors import StoreUnavailable
from lclusterd.model import NodeInfo

log = logging.getLogger(__name__)


class NodeSession:
    def __init__(self, store: Store, keys: Keys, info: NodeInfo, ttl: int = 5):
        self.store = store
        self.keys = keys
        self.info = info
        self.ttl = ttl
        self.lease_id = 0
        self._stopped = threading.Event()
        self._listeners: list[Callable[[int], None]] = []
        self._thread = threading.Thread(target=self._keep_alive, name="node lease", daemon=True)

    def on_new_lease(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)

    def register(self) -> None:
        """Grant the lease and write nodes/<name>. A previous incarnation of this node (same
        name, a lease not yet expired after a crash) has its lease revoked first, which also
        frees the prime key if it held it. Call once at start-up; raises StoreUnavailable."""
        previous = self.store.get(self.keys.node(self.info.name))
        if previous is not None and previous.lease:
            log.info("revoking the lease of this node's previous run")
            self.store.revoke(previous.lease)
        self._register_new_lease()
        self._thread.start()

    def _register_new_lease(self) -> None:
        lease = self.store.grant(self.ttl)
        self.store.txn([], [Put(self.keys.node(self.info.name), self.info.to_bytes(), lease)])
        self.lease_id = lease

    def _keep_alive(self) -> None:
        interval = max(self.ttl / 3, 0.5)
        while not self._stopped.wait(interval):
            try:
                if self.store.keepalive(self.lease_id) > 0:
                    continue
                log.warning("node lease expired; registering again")
                self._register_new_lease()
                for listener in self._listeners:
                    listener(self.lease_id)
            except StoreUnavailable as exc:
                log.warning("node lease keep-alive: %s", exc)
            except Exception:
                log.exception("node lease keep-alive failed")

    def close(self) -> None:
        """Stop the keep-alive and revoke the lease: nodes/<name> (and prime) go away now."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.lease_id:
            deadline = time.monotonic() + 2
            while True:
                try:
                    self.store.revoke(self.lease_id)
                    break
                except StoreUnavailable as exc:
                    if time.monotonic() > deadline:
                        log.warning("could not revoke the node lease (%s); it expires in %ds", exc, self.ttl)
                        break
                    time.sleep(0.2)


def list_nodes(store: Store, keys: Keys) -> list[tuple[NodeInfo, int, bool]]:
    """Every registered node with its number of assigned or running jobs and whether it is prime."""
    kvs, _ = store.get_prefix(keys.nodes_prefix)
    assigned, _ = store.get_prefix(keys.assign_all_prefix, keys_only=True)
    prime = store.get(keys.prime)
    counts: dict[str, int] = {}
    for kv in assigned:
        node, _job = keys.assign_parts(kv.key)
        counts[node] = counts.get(node, 0) + 1
    result = []
    for kv in kvs:
        try:
            info = NodeInfo.from_bytes(kv.value)
        except (ValueError, TypeError, KeyError):
            continue
        result.append((info, counts.get(info.name, 0), prime is not None and prime.value == info.name.encode()))
    return result
