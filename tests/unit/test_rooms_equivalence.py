"""The prime's indexed placement (ClusterView.place over rooms.Rooms) against the reference,
placement.place over a Room built for every node (ClusterView.rooms()), on random clusters:
the same node and the same sentence for every job, with every policy, whatever happened
before. A simulated etcd (memstore.MemStore) holds the truth; three views, one per policy,
follow it through the events a watch would deliver, held back and delivered in random-sized
runs (so reservations settle before and after their assignment's event), and through re-reads
(a resync drops what was not delivered yet, as the watch hub does). Between the changes, jobs
are placed one by one, and in batches the way the scheduler places them (each placement held
as a reservation before the next job); the scheduler's own _next_batch is held to the batch
loop it replaced. Nodes publish random sets of images and jobs ask for one (or none, or one no
node has), so the per-image indexes are held to the same answers. Each failure names its seed
and step, to replay."""

from __future__ import annotations

import random
from collections import deque

from memstore import MemStore

from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Delete, Event, Put
from lclusterd.cluster.placement import BEST_FIT, FIRST_FIT, POLICIES, PRIME_FIRST, Needs, place
from lclusterd.cluster.scheduler import BATCH, Scheduler
from lclusterd.cluster.view import IN_FLIGHT, ClusterView, QueuedJob, Reservation
from lclusterd.model import ASSIGNED, JobRecord, JobSpec, NodeInfo

KEYS = Keys("/t")
M = 256 << 20
OFFERS = [0, 4 * M, 8 * M, 16 * M, 32 * M]  # a node may offer nothing (0)
REQUESTS = [0, 0, 0, M, 2 * M, 4 * M, 8 * M, 40 * M]  # mostly none; one more than any node offers
IMAGES = ["busybox", "debian", "py"]
JOB_IMAGES = ["", "", "", "busybox", "debian", "py", "nosuch"]  # mostly none; one no node has


def some_images(rng: random.Random) -> list[str]:
    return sorted(rng.sample(IMAGES, rng.randrange(0, len(IMAGES) + 1)))
SUBNETS = ["", "10.88.0.0/24", "10.88.1.0/24"]  # "": a node without a job network
ROOTS = [(), (), ("/srv",), ("/srv/a", "/data"), ("/data",)]
VOLUMES = [[], [], [], ["/srv/a/x:/x"], ["/data:/d:ro"], ["/srv/a:/a", "/data/b:/b"], ["/elsewhere:/e"]]


def an_offer(rng: random.Random) -> dict:
    return {"subnet": rng.choice(SUBNETS), "volume_roots": list(rng.choice(ROOTS))}


def some_needs(rng: random.Random) -> Needs | None:
    return Needs.of(JobSpec("true", net=rng.choice(["none", "none", "bridge"]), volumes=rng.choice(VOLUMES)))


class Sim:
    """etcd, its watches held back per prefix, and the views following them."""

    def __init__(self, rng: random.Random, names: list[str]):
        self.rng, self.names, self.prime = rng, names, rng.choice(names + ["not-a-node"])
        self.store = MemStore()
        self.views = [ClusterView(self.store, None, KEYS, lambda: None, policy, self.prime) for policy in POLICIES]
        for view in self.views:
            view._read_nodes(), view._read_drains(), view._read_assignments()
        self.pending = {"nodes": deque(), "drain": deque(), "assign": deque()}
        self.in_flight: list[tuple[str, str, int]] = []  # reservations not written yet: job, node, memory
        self.landed: list[tuple[str, int | None]] = []  # returned, not settled yet: job, revision
        self.jobs = 0

    def write(self, prefix: str, op) -> int:
        revision = self.store.txn([], [op]).revision
        kind, value = ("put", op.value) if isinstance(op, Put) else ("delete", b"")
        self.pending[prefix].append(Event(kind, op.key, value, revision))
        return revision

    def deliver(self, prefix: str, count: int) -> None:
        events = [self.pending[prefix].popleft() for _ in range(min(count, len(self.pending[prefix])))]
        if events:
            for view in self.views:
                {"nodes": view._node_events, "drain": view._drain_events, "assign": view._assign_events}[prefix](events)

    def resync(self, prefix: str) -> None:
        self.pending[prefix].clear()
        for view in self.views:
            {"nodes": view._read_nodes, "drain": view._read_drains, "assign": view._read_assignments}[prefix]()

    def reserve(self, job: str, node: str, memory: int) -> None:
        for view in self.views:
            view.reserve(job, Reservation(node, IN_FLIGHT, memory))
        self.in_flight.append((job, node, memory))

    def new_job(self) -> str:
        self.jobs += 1
        return f"{self.jobs:032x}"

    def assignment(self, job: str, node: str, memory: int) -> Put:
        record = JobRecord(id=job, spec=JobSpec("true", memory_bytes=memory or None)).moved_to(ASSIGNED, node=node)
        return Put(KEYS.assign(node, job), record.to_bytes())


def change(sim: Sim) -> None:
    """One random thing happening to the cluster."""
    rng, name = sim.rng, sim.rng.choice(sim.names)
    what = rng.randrange(11)
    if what == 0:  # (re-)registration, with perhaps another offer
        info = NodeInfo(name, "", rng.randrange(0, 6), memory_bytes=rng.choice(OFFERS), images=some_images(rng),
                        **an_offer(rng))
        sim.write("nodes", Put(KEYS.node(name), info.to_bytes()))
    elif what == 1 and sim.store.get(KEYS.node(name)):  # its lease expired
        sim.write("nodes", Delete(KEYS.node(name)))
    elif what == 2:
        sim.write("drain", Put(KEYS.drain(name), b"1") if rng.random() < 0.5 else Delete(KEYS.drain(name)))
    elif what == 3:  # assigned by someone else (another prime, an add), perhaps to a dead node
        sim.write("assign", sim.assignment(sim.new_job(), name, rng.choice(REQUESTS)))
    elif what == 4:  # a job ended
        kvs, _ = sim.store.get_prefix(KEYS.assign_all_prefix)
        if kvs:
            sim.write("assign", Delete(rng.choice(kvs).key))
    elif what in (5, 6):
        sim.deliver(rng.choice(list(sim.pending)), rng.randrange(1, 5))
    elif what == 7 and rng.random() < 0.3:
        sim.resync(rng.choice(list(sim.pending)))
    elif what == 8 and sim.in_flight:  # a reservation's transaction returns: written or not
        job, node, memory = sim.in_flight.pop(rng.randrange(len(sim.in_flight)))
        if rng.random() < 0.7:
            sim.landed.append((job, sim.write("assign", sim.assignment(job, node, memory))))
        elif rng.random() < 0.5:  # not ours: another writer put the job on some node first
            sim.write("assign", sim.assignment(job, rng.choice(sim.names), rng.choice(REQUESTS)))
            sim.landed.append((job, None))
        else:
            for view in sim.views:
                view.settle(job, None)
    elif what in (9, 10) and sim.landed:  # settled, before or after its event was delivered
        job, revision = sim.landed.pop(rng.randrange(len(sim.landed)))
        for view in sim.views:
            view.settle(job, revision)


def a_job(sim: Sim) -> tuple[int, str, list[str], Needs | None, str]:
    rng = sim.rng
    pinned = rng.choice(sim.names + ["elsewhere"]) if rng.random() < 0.15 else ""
    avoid = rng.sample(sim.names, rng.randrange(0, min(3, len(sim.names)) + 1)) if rng.random() < 0.3 else []
    return rng.choice(REQUESTS), pinned, avoid, some_needs(rng), rng.choice(JOB_IMAGES)


def check_batch(sim: Sim, where: str, size: int) -> None:
    """Jobs placed one after another, each holding its room as a reservation before the next
    (as a batch does), against the reference taking each from one snapshot of every room. Then
    every view gives its batch back (a failed transaction) and one view's choices are held in
    all three, in flight, for change() to write or give back later."""
    jobs = [(sim.new_job(), *a_job(sim)) for _ in range(size)]
    chosen = {}
    for view in sim.views:
        rooms = view.rooms()
        assert view.free_slots() == sum(max(r.slots, 0) for r in rooms.values() if not r.draining), where
        assert {n: view.index.room(n) for n in rooms} == rooms, where
        chosen[view.policy] = []
        for job, memory, pinned, avoid, needs, image in jobs:
            expected = place(view.policy, rooms, sim.prime, memory, pinned, avoid, needs, image)
            got = view.place(memory, pinned, avoid, needs, image)
            assert got == expected, f"{where} {view.policy} job {memory, pinned, avoid, needs, image}: {got} != {expected}"
            if got[0] is not None:
                rooms[got[0]].take(memory)
                view.reserve(job, Reservation(got[0], IN_FLIGHT, memory))
                chosen[view.policy].append((job, got[0], memory))
        for job, _node, _memory in chosen[view.policy]:
            view.settle(job, None)
    for job, node, memory in chosen[sim.rng.choice(POLICIES)]:
        sim.reserve(job, node, memory)


def test_indexed_placement_chooses_as_the_reference_does_on_random_clusters():
    for seed in range(300):
        rng = random.Random(seed)
        names = [f"n{i:02d}" for i in rng.sample(range(60), rng.choice([1, 3, 8, 40]))]
        sim = Sim(rng, names)
        for step in range(150):
            change(sim)
            if step % 3 == 0:
                check_batch(sim, f"seed {seed} step {step}", rng.choice([1, 1, 4, 12]))


def test_the_schedulers_batches_are_the_ones_the_scan_over_every_room_made():
    for seed in range(150):
        rng = random.Random(seed)
        names = [f"n{i}" for i in range(rng.choice([2, 5, 30]))]
        policy = rng.choice(POLICIES)
        s = Scheduler(None, None, KEYS, None, names[0], policy)
        for i, name in enumerate(names):
            info = NodeInfo(name, "", rng.randrange(0, 5), memory_bytes=rng.choice(OFFERS), images=some_images(rng),
                            **an_offer(rng))
            s.view._node_events([Event("put", KEYS.node(name), info.to_bytes(), i + 1)])
            if rng.random() < 0.1:
                s.view._drain_events([Event("put", KEYS.drain(name), b"1", i + 1)])
        for i in range(rng.randrange(1, 80)):
            pinned = rng.choice(names) if rng.random() < 0.1 else ""
            history = [{"node": rng.choice(names)}] if rng.random() < 0.2 else []
            needs = rng.random() < 0.3
            spec = JobSpec("true", memory_bytes=rng.choice(REQUESTS) or None, node=pinned,
                           net=rng.choice(["none", "bridge"]) if needs else "none",
                           volumes=rng.choice(VOLUMES) if needs else [], image=rng.choice(JOB_IMAGES))
            record = JobRecord(id=f"{i:032x}", spec=spec, history=history)
            s.view.queue[record.id] = QueuedJob(KEYS.job(record.id), record.to_bytes(), 100 + i)
        while True:
            expected = reference_batch(s.view, policy, names[0])
            batch, notes = s._next_batch()
            got = ([(a.record.id, a.node) for a in batch], [(n.record.id, n.why) for n in notes])
            assert got == expected, f"seed {seed}"
            if not batch:
                break
            for a in batch:  # written: out of the queue, the reservation stays until its event
                s.view.assigned_from_queue(a.record.id, a.revision)


def reference_batch(view: ClusterView, policy: str, me: str) -> tuple[list, list]:
    """The batch loop as it was before the index: one Room per node, each job scanned over all."""
    batch, notes = [], []
    rooms = view.rooms()
    free = sum(max(r.slots, 0) for r in rooms.values() if not r.draining)
    for job_id, entry in view.queue.items():
        if free <= 0 or len(batch) >= BATCH:
            break
        if entry.skip:
            continue
        record = entry.record()
        memory = record.spec.memory_bytes or 0
        avoid = [a.get("node", "") for a in record.history]
        node, why = place(policy, rooms, me, memory, record.spec.node, avoid, Needs.of(record.spec), record.spec.image)
        if node is None:
            if why and why != record.waiting:
                notes.append((job_id, why))
            continue
        rooms[node].take(memory)
        free -= 1
        batch.append((job_id, node))
    return batch, notes


def test_policies_are_the_ones_compared():
    assert set(POLICIES) == {PRIME_FIRST, FIRST_FIT, BEST_FIT}
