"""NodeSession: this node's registration under nodes/<name>, held by a lease with keep-alive.

The same lease also holds the prime key while this node is prime, so one lease is the
node's whole liveness. If the lease is lost (etcd unreachable for longer than its TTL), the
session grants a new one, re-registers, and tells its listeners (the prime election).

The registration also lists the node's images (NodeInfo.images), which the prime places jobs
by. `lclusterd image import|rm` is another process, so the keep-alive loop asks the image
store whether it changed (one stat of its directory) and registers again when it did.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Protocol

from lclusterd.cluster import decode
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Delete, KeyValue, Put
from lclusterd.cluster.store import Store
from lclusterd.errors import NodeNotFound, RecordError, StoreUnavailable
from lclusterd.model import NODE_NAME, JobRecord, NodeInfo

log = logging.getLogger(__name__)


class ImageNames(Protocol):
    """What the registration needs of the node's image store (runtime/images/store.py)."""

    def names(self) -> list[str]: ...

    def without_command(self) -> list[str]: ...

    def stamp(self) -> Hashable | None: ...


class NodeSession:
    def __init__(self, store: Store, keys: Keys, info: NodeInfo, ttl: int = 5, images: ImageNames | None = None):
        """`info` is shared: its `images` is kept up to date here (admission reads it)."""
        self.store = store
        self.keys = keys
        self.info = info
        self.ttl = ttl
        self.images = images
        self._images_stamp: Hashable = None
        self.lease_id = 0
        self._stopped = threading.Event()
        self._listeners: list[Callable[[int], None]] = []
        self._lost_listeners: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._keep_alive, name="node lease", daemon=True)

    def on_new_lease(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)

    def on_lease_lost(self, listener: Callable[[], None]) -> None:
        """`listener` runs when the lease turns out to have expired, BEFORE the node registers
        again: the prime may have declared this node dead, so the worker fences its jobs first."""
        self._lost_listeners.append(listener)

    def register(self) -> None:
        """Grant the lease and write nodes/<name>. A previous incarnation of this node (same
        name, a lease not yet expired after a crash) has its lease revoked first, which also
        frees the prime key if it held it. Call once at start-up; raises StoreUnavailable."""
        previous = self.store.get(self.keys.node(self.info.name))
        if previous is not None and previous.lease:
            log.info("revoking the lease of this node's previous run")
            self.store.revoke(previous.lease)
        self._images_changed()
        self._register_new_lease()
        self._thread.start()

    def _register_new_lease(self) -> None:
        lease = self.store.grant(self.ttl)
        self._put_registration(lease)
        self.lease_id = lease

    def _put_registration(self, lease: int) -> None:
        raw = self.info.to_bytes()
        # members/<name> outlives the lease, so -nodes can list this node as gone after it dies
        self.store.txn([], [Put(self.keys.node(self.info.name), raw, lease), Put(self.keys.member(self.info.name), raw)])

    def _images_changed(self) -> bool:
        """Whether the image store changed since last asked, its names then in info.images.
        Never raises for the store (a bad disk is logged; the node keeps its last list)."""
        if self.images is None:
            return False
        try:
            stamp = self.images.stamp()  # None: changed a moment ago, look every time
            if stamp is not None and stamp == self._images_stamp:
                return False
            names, without_command = self.images.names(), self.images.without_command()
        except OSError as exc:
            log.warning("cannot read this node's image store: %s", exc)
            return False
        self._images_stamp = stamp
        if (names, without_command) == (self.info.images, self.info.images_without_command):
            return False
        self.info.images, self.info.images_without_command = names, without_command
        return True

    def _keep_alive(self) -> None:
        interval = max(self.ttl / 3, 0.5)
        while not self._stopped.wait(interval):
            try:
                if self.store.keepalive(self.lease_id) > 0:
                    if self._images_changed():
                        log.info("this node's images are now: %s", ", ".join(self.info.images) or "none")
                        self._put_registration(self.lease_id)
                    continue
                log.warning("node lease expired (this node may have been declared dead); registering again")
                for listener in self._lost_listeners:
                    listener()
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


@dataclass
class NodeView:
    """A node as -nodes shows it."""

    info: NodeInfo
    state: str  # ready, prime, draining, gone
    running: int  # jobs assigned to it or running on it
    memory_used: int  # bytes requested (-mem) by those jobs
    prime: bool = False  # holds the prime key (a draining prime still schedules, but not onto itself)


class NodeDirectory:
    """The nodes as the API shows and steers them."""

    def __init__(self, store: Store, keys: Keys):
        self.store = store
        self.keys = keys

    def list(self) -> list[NodeView]:
        return list_nodes(self.store, self.keys)

    def set_draining(self, name: str, draining: bool) -> NodeView:
        return set_draining(self.store, self.keys, name, draining)


def list_nodes(store: Store, keys: Keys) -> list[NodeView]:
    """Every node that ever registered (members/), live or gone, sorted by name."""
    live = {Keys.last(kv.key): kv for kv in store.get_prefix(keys.nodes_prefix)[0]}
    members = {Keys.last(kv.key): kv for kv in store.get_prefix(keys.members_prefix)[0]}
    draining = {Keys.last(kv.key) for kv in store.get_prefix(keys.drain_prefix, keys_only=True)[0]}
    assigned, _ = store.get_prefix(keys.assign_all_prefix)
    prime = store.get(keys.prime)
    running: dict[str, int] = {}
    memory: dict[str, int] = {}
    for kv in assigned:
        node, _job = keys.assign_parts(kv.key)
        running[node] = running.get(node, 0) + 1
        memory[node] = memory.get(node, 0) + JobRecord.requested_memory(kv.value)
    result = []
    for name in sorted(set(live) | set(members)):
        info = _first_valid(live.get(name), members.get(name))
        if info is None:  # a registration that is not a node's is no node
            continue
        if name not in live:
            state = "gone"
        elif name in draining:
            state = "draining"
        elif prime is not None and prime.value == name.encode():
            state = "prime"
        else:
            state = "ready"
        is_prime = name in live and prime is not None and prime.value == name.encode()
        result.append(NodeView(info, state, running.get(name, 0), memory.get(name, 0), is_prime))
    return result


def _first_valid(*kvs: KeyValue | None) -> NodeInfo | None:
    """The NodeInfo of the first of `kvs` that holds a valid one (the others are logged once)."""
    for kv in kvs:
        if kv is not None:
            try:
                return decode.node(kv.key, kv.value, kv.mod_revision)
            except RecordError:
                continue
    return None


def ready_nodes(store: Store, keys: Keys, image: str = "") -> tuple[list[tuple[str, int]], str]:
    """The nodes that take new jobs now: registered (live lease) and not draining, and with
    `image` when one is given, sorted by name, each with the mod revision of its nodes/<name>
    key (a guard that it is still the same registration, images included). With none, the
    list is empty and the sentence says why."""
    live, _ = store.get_prefix(keys.nodes_prefix, keys_only=not image)
    if image:  # only then are the registrations read whole
        live = [kv for kv in live if image in getattr(_first_valid(kv), "images", ())]
    draining = {Keys.last(kv.key) for kv in store.get_prefix(keys.drain_prefix, keys_only=True)[0]}
    names = [(Keys.last(kv.key), kv.mod_revision) for kv in live if NODE_NAME.match(Keys.last(kv.key))]  # keys are input
    ready = sorted((name, revision) for name, revision in names if name not in draining)
    if ready:
        return ready, ""
    if image:
        return [], f"every node with the image {image!r} is draining" if live else f"no ready node has the image {image!r}"
    return [], "every registered node is draining" if live else "no node is registered"


def set_draining(store: Store, keys: Keys, name: str, draining: bool) -> NodeView:
    """Write (or remove) drain/<name>: the prime stops (or resumes) assigning to that node,
    whose running jobs go on. NodeNotFound for a name that never registered."""
    if store.get(keys.member(name)) is None and store.get(keys.node(name)) is None:
        raise NodeNotFound(name)
    store.txn([], [Put(keys.drain(name), b"1")] if draining else [Delete(keys.drain(name))])
    return next(v for v in list_nodes(store, keys) if v.info.name == name)
