"""The metrics endpoint: Prometheus' text format (or OpenMetrics, when asked) over plain HTTP
on --metrics-listen, any path (`/metrics` by convention), served by prometheus_client's own
threaded server.

Plain HTTP and no authentication: what it shows is numbers about jobs, never their ids,
commands, owners or output, and it listens on loopback by default; an operator who binds it
elsewhere decides who may read those numbers (docs/operations.md, "Who may read metrics").
"""

from __future__ import annotations

import threading

from prometheus_client import start_http_server
from prometheus_client.registry import Collector

from lclusterd.metrics import REGISTRY


class MetricsStartError(Exception):
    """The endpoint cannot be served; the message is one line for the operator."""


class MetricsServer:
    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self._collectors: list[Collector] = []
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a thread of its own; MetricsStartError if the address cannot be
        bound. Until add() is called, a scrape shows the counters and histograms only."""
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=REGISTRY)
        except OSError as exc:
            raise MetricsStartError(f"cannot serve metrics on {self.address}: {exc.strerror or exc} (pick another "
                                    "address with --metrics-listen, or turn them off with --metrics-listen '')") from None

    def add(self, collector: Collector) -> None:
        """Read `collector` at every scrape from now on (until stop)."""
        REGISTRY.register(collector)
        self._collectors.append(collector)

    def stop(self) -> None:
        for collector in self._collectors:
            REGISTRY.unregister(collector)
        self._collectors = []
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
