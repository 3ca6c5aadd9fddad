"""Keeps the embedded etcd running while the daemon runs: when its process dies (killed,
crashed), it is started again on the same data dir, ports and certificates, so the store and
the watches reconnect to it as if it had been unreachable for a moment; the reporter keeps the
results meanwhile (and journals them).

Tries are bounded: at most TRIES in a row, FIRST_DELAY before the first and twice as long before
each next one. A death within STABLE seconds of a restart continues the count, so an etcd that
dies again and again right after starting also runs out of tries. Then `on_lost` is called
with one line saying why, and the daemon stops (exit status 3) for its own supervisor to deal
with: a node without etcd can neither report nor take jobs. Each death and each try is logged
as one line.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable

from pathlib import Path

from lclusterd.etcd_embedded import EmbeddedEtcd, EtcdStartError
from lclusterd.etcd_tls import ensure_embedded

log = logging.getLogger(__name__)

TRIES = 5
FIRST_DELAY = 0.25  # then 0.5, 1, 2, 4: about 8 s without etcd before the node gives up
STABLE = 60.0


def start_embedded(state_dir: Path, on_lost: Callable[[str], None]) -> EtcdSupervisor:
    """The node's embedded etcd with its certificates (made once, etcd_tls.py), started, and
    its supervisor watching it; close() the supervisor to stop both. EtcdTlsError or
    EtcdStartError when it cannot be started."""
    tls = ensure_embedded(state_dir)
    etcd = EmbeddedEtcd(state_dir, tls)
    endpoint = etcd.start()
    supervisor = EtcdSupervisor(etcd, on_lost)
    supervisor.start()
    log.info("embedded etcd at %s (data in %s, certificates in %s)", endpoint, etcd.data_dir, tls.directory)
    return supervisor


def describe_exit(status: int) -> str:
    """A process's exit status as words: `was killed by SIGKILL`, `exited with status 1`."""
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


class EtcdSupervisor:
    def __init__(self, etcd: EmbeddedEtcd, on_lost: Callable[[str], None], tries: int = TRIES,
                 first_delay: float = FIRST_DELAY, stable: float = STABLE):
        self.etcd = etcd
        self.on_lost = on_lost
        self.tries = tries
        self.first_delay = first_delay
        self.stable = stable
        self.restarts = 0  # successful ones
        self._failures = 0  # tries since etcd last stayed up for `stable` seconds
        self._up_since = time.monotonic()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd supervisor", daemon=True)

    def start(self) -> None:
        """Watch the running etcd (after etcd.start() succeeded)."""
        self._up_since = time.monotonic()
        self._thread.start()

    def close(self) -> None:
        """Stop etcd for good (no restart follows) and the supervision."""
        self._closing.set()
        self.etcd.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def _run(self) -> None:
        while True:
            pid, status = self.etcd.process.pid, self.etcd.wait()
            if self._closing.is_set():
                return
            if not self._restart(f"the embedded etcd (pid {pid}) {describe_exit(status)}"):
                return

    def _restart(self, why: str) -> bool:
        """Start etcd again, within the tries left; False when it could not be (on_lost was
        called) or the daemon is closing. `why`: how it died, a sentence."""
        if time.monotonic() - self._up_since >= self.stable:
            self._failures = 0
        last = why
        while self._failures < self.tries:
            self._failures += 1
            delay = self.first_delay * 2 ** (self._failures - 1)
            log.warning("%s; starting it again in %gs (try %d of %d)", why, delay, self._failures, self.tries)
            if self._closing.wait(delay):
                return False
            try:
                self.etcd.restart()
            except EtcdStartError as exc:
                if self._closing.is_set():
                    return False
                last = str(exc)
                why = f"the embedded etcd did not start again ({exc})"
                continue
            self._up_since = time.monotonic()
            log.info("the embedded etcd is running again (pid %d, at %s)", self.etcd.process.pid, self.etcd.endpoint)
            self.restarts += 1  # (after the line: a reader of the count finds the restart said)
            return True
        self.on_lost(f"the embedded etcd could not be started again after {self.tries} tries; the last: {last}")
        return False
