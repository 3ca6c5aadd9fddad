"""What a scrape reads of the node's state, as gauges computed at scrape time: the jobs of
the cluster by state and node (from the node's jobs/ watch: cluster/jobstates.py), the
queue's depth, this node's load and whether it is the prime. Nothing is kept or computed
between scrapes, so these cost the hot paths nothing.

Every node follows every job, so every node reports the same `lclusterd_jobs`; aggregate
with `max by (state, node)` across the nodes scraped (docs/operations.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lclusterd.states import QUEUED, STATES


@dataclass(frozen=True)
class NodeLoad:
    """This node's load at one moment."""

    running: int  # jobs its runtime runs now
    capacity: int  # most jobs it runs at once (--capacity)
    memory_offered: int  # bytes offered to jobs (--memory)
    memory_used: int  # bytes requested (-mem) by the jobs assigned to it or running on it
    prime: bool  # holds the prime key


class NodeCollector(Collector):
    """Gauges read at scrape time from `load()` (this node) and `jobs()` ((state, node) -> jobs,
    the cluster as the node's watch sees it; node "" for jobs not placed)."""

    def __init__(self, node: str, load: Callable[[], NodeLoad], jobs: Callable[[], dict[tuple[str, str], int]]):
        self.node = node
        self._load = load
        self._jobs = jobs

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families(self._load(), self._jobs())

    def _families(self, load: NodeLoad | None = None, jobs: dict[tuple[str, str], int] | None = None):
        by_state = GaugeMetricFamily("lclusterd_jobs", "Jobs in etcd by state and by the node they are on or ran on "
                                     "(\"\" before one is chosen), as this node's watch sees them.",
                                     labels=["state", "node"])
        queue = GaugeMetricFamily("lclusterd_queue_depth", "Jobs waiting in the queue for a node (QUEUED).")
        node_gauges = [
            ("lclusterd_node_running_jobs", "Jobs this node's runtime runs now.", "running"),
            ("lclusterd_node_capacity_jobs", "Most jobs this node runs at once (--capacity).", "capacity"),
            ("lclusterd_node_memory_offered_bytes", "Memory this node offers its jobs (--memory).", "memory_offered"),
            ("lclusterd_node_memory_free_bytes", "Memory this node offers less what its assigned and running jobs "
             "requested (-mem).", None),
            ("lclusterd_node_is_prime", "1 while this node is the prime (holds the prime key), else 0.", "prime"),
        ]
        families = [GaugeMetricFamily(name, text, labels=["node"]) for name, text, _ in node_gauges]
        if load is not None and jobs is not None:
            nodes = {node for _, node in jobs} | {""}
            for state in STATES:
                for node in sorted(nodes):
                    by_state.add_metric([state, node], jobs.get((state, node), 0))
            queue.add_metric([], sum(count for (state, _), count in jobs.items() if state == QUEUED))
            for family, (_, _, field) in zip(families, node_gauges):
                value = getattr(load, field) if field else max(load.memory_offered - load.memory_used, 0)
                family.add_metric([self.node], float(value))
        yield by_state
        yield queue
        yield from families
