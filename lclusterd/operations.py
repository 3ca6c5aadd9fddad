"""What an operator sees of a running node besides its API (docs/operations.md): the metrics
endpoint (--metrics-listen) and this node's gauges on it, the tally of job states that those
gauges and the Events call read, and the readiness message systemd waits for. Wiring, as
daemon.py is (it may import anything): the daemon calls it from three of its phases.
"""

from __future__ import annotations

from contextlib import ExitStack

from lclusterd.cluster.jobstates import JobStates
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.store import Store
from lclusterd.cluster.watch import Watches
from lclusterd.config import Config
from lclusterd.logformat import configure_logging, notify_systemd
from lclusterd.metrics.collector import NodeCollector, NodeLoad
from lclusterd.metrics.serve import MetricsServer, MetricsStartError

__all__ = ["MetricsStartError", "NodeOperations", "configure_logging"]


class NodeOperations:
    def __init__(self, config: Config):
        self.config = config
        address = config.metrics_address
        self.metrics = MetricsServer(*address) if address is not None else None
        self.states: JobStates | None = None
        self.where = ""  # what the daemon's "serving" line adds: where the metrics are

    def start(self) -> None:
        """Bind the metrics endpoint with the node's other listeners, so that an address in use
        fails the start before etcd is touched (MetricsStartError)."""
        if self.metrics is not None:
            self.metrics.start()

    def stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()

    def follow_jobs(self, store: Store, watches: Watches, keys: Keys, teardown: ExitStack) -> JobStates:
        """Read and follow every job's state; `teardown` stops it. Call it after every other share
        of the watch: the hub calls its shares in the order they joined, so then the tally's
        decoding delays neither the worker's assignments nor a Wait on the same response."""
        self.states = JobStates(store, watches, keys)
        self.states.start()
        teardown.callback(self.states.stop)
        return self.states

    def serving(self, running, memory_requested, is_prime) -> None:
        """The node serves: its gauges join the metrics, read at each scrape through the three
        callables (its running job ids, the memory its jobs requested, whether it is the prime),
        and systemd hears READY=1."""
        c = self.config
        if self.metrics is not None:
            def load() -> NodeLoad:
                return NodeLoad(len(running()), c.capacity, c.memory_bytes, memory_requested(), is_prime())
            self.metrics.add(NodeCollector(c.node_name, load, self.states.counts))
            self.where = f"; metrics on http://{self.metrics.address}/metrics"
        notify_systemd("READY=1")
