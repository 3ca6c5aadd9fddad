"""Wiring of one lclusterd node: runtime helper, etcd (embedded or given), node lease, worker,
prime election + scheduler, gRPC server, and an orderly shutdown on SIGTERM/SIGINT.

Order matters: the runtime helper is spawned first, before any thread of ours exists, and
the daemon never forks after that (gRPC Python does not support fork).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lclusterd import __version__
from lclusterd.api.peers import Peers
from lclusterd.api.servicer import MAX_BLOCKING, JobsServicer
from lclusterd.cluster.events import JobEvents
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.logs import LogFiles
from lclusterd.cluster.node import NodeSession
from lclusterd.cluster.prime import PrimeElection
from lclusterd.cluster.admission import Admission
from lclusterd.cluster.retention import LogSweep, Retention
from lclusterd.cluster.runspec import NodeDefaults
from lclusterd.cluster.scheduler import Scheduler
from lclusterd.cluster.store import Store
from lclusterd.cluster.worker import Worker
from lclusterd.config import Config, ConfigError
from lclusterd.errors import LclusterdError, StoreUnavailable
from lclusterd.etcd_embedded import EmbeddedEtcd, EtcdStartError
from lclusterd.model import NodeInfo
from lclusterd.rpc import lclusterd_pb2 as pb
from lclusterd.rpc import lclusterd_pb2_grpc as pb_grpc
from lclusterd.runtime import host, userns
from lclusterd.runtime.cgroups import NodeLimits
from lclusterd.runtime.launcher import IdRanges, Launcher
from lclusterd.runtime.spec import RuntimeSpec

log = logging.getLogger("lclusterd")

EXIT_OK = 0
EXIT_STARTUP_FAILURE = 3
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Jobs"].full_name


class StartupError(Exception):
    """The daemon cannot start; the message is one line for the operator."""


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.stop_requested = threading.Event()
        self._signals = 0
        self.runtime_lost = False  # the fork server died under us: exit non-zero
        self.launcher: Launcher | None = None
        self.etcd: EmbeddedEtcd | None = None
        self.store: Store | None = None
        self.session: NodeSession | None = None
        self.worker: Worker | None = None
        self.election: PrimeElection | None = None
        self.events: JobEvents | None = None
        self.server: grpc.Server | None = None
        self.health: health.HealthServicer | None = None
        self.peers: Peers | None = None
        self.log_sweep: LogSweep | None = None

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        c = self.config
        try:
            c.validate()
            c.check_listen_address()
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        if not Path(c.rootfs, "bin", "sh").exists():
            raise StartupError(f"rootfs {c.rootfs} has no /bin/sh (build one with: make rootfs, "
                               f"or sh rootfs/build.sh busybox {c.rootfs})")
        state = Path(c.state_dir)
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        logs = LogFiles(state / "logs")
        logs.prepare()

        # 1. the fork server, before any thread; then one job to prove jobs can run here
        self.launcher = Launcher(state / "runtime", cgroup_parent=c.cgroup_parent, on_event=self._on_runtime_event,
                                 on_helper_exit=self._on_runtime_helper_exit, userns=self._user_namespaces(),
                                 node_limits=NodeLimits(c.memory_bytes, c.max_pids_value))
        try:
            self.launcher.start()
        except LclusterdError as exc:
            raise StartupError(str(exc)) from None
        self._probe_runtime()

        # 2. the listening sockets, so a port in use fails before this node touches etcd
        self._bind_server()

        # 3. etcd
        endpoints = c.etcd
        if not endpoints:
            self.etcd = EmbeddedEtcd(state)
            try:
                endpoints = [self.etcd.start()]
            except EtcdStartError as exc:
                raise StartupError(str(exc)) from None
            log.info("embedded etcd at %s (data in %s)", endpoints[0], self.etcd.data_dir)
        try:
            self.store = Store(endpoints, timeout=c.etcd_timeout)
        except ValueError as exc:
            raise StartupError(f"--etcd: {exc}") from None
        self._wait_for_etcd()

        # 4. this node in etcd, the worker, the prime election
        keys = Keys(c.prefix)
        jobs = Jobs(self.store, keys)
        info = NodeInfo(name=c.node_name, address=c.address, capacity=c.capacity, version=__version__, started_at=time.time(),
                        memory_bytes=c.memory_bytes, max_pids=c.max_pids_value, cores=host.cores())
        defaults = NodeDefaults(rootfs=c.rootfs, pids=c.default_pids, memory_bytes=c.default_memory_bytes,
                                kill_grace=c.kill_grace, max_log_bytes=c.max_log_bytes)
        try:
            self.store.share_watches(keys.prefix + "/")  # one etcd watch stream for all of them
            self.session = NodeSession(self.store, keys, info, ttl=c.lease_ttl)
            self.worker = Worker(self.store, keys, jobs, c.node_name, self.launcher, defaults, logs)
            self.session.on_lease_lost(self.worker.fence)
            self.session.register()
            self.worker.start()
            scheduler = Scheduler(self.store, keys, jobs, c.node_name, c.scheduling)
            jobs.placer = scheduler  # adds on the prime are placed at once when nothing is queued
            retention = Retention(self.store, keys, c.keep_seconds)
            self.election = PrimeElection(self.store, keys, self.session, *_prime_duties(scheduler, retention))
            self.election.start()
            self.events = JobEvents(self.store, keys)
            self.events.start()
            self.log_sweep = LogSweep(logs, c.keep_seconds, self.launcher.running)
            self.log_sweep.start()
        except StoreUnavailable as exc:
            raise StartupError(str(exc)) from None

        # 5. the API
        self.peers = Peers(self.store, keys, c.node_name)
        servicer = JobsServicer(jobs, self.events, logs, c.node_name, Admission(self.store, keys, info), self.peers)
        pb_grpc.add_JobsServicer_to_server(servicer, self.server)
        self.server.start()
        os.chmod(c.socket_path, 0o600)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("node %s serving on %s:%d and unix:%s; etcd at %s; rootfs %s",
                 c.node_name, c.bind_host, c.port, c.socket_path, self.store.describe(), c.rootfs)

    def _user_namespaces(self) -> IdRanges | None:
        if self.config.userns == "off":
            return None
        ranges = userns.subordinate_ranges()
        if ranges is None:
            raise StartupError(f"{userns.MISSING_RANGES}; or start with --userns off")
        return ranges

    def _probe_runtime(self) -> None:
        """Run one empty job, so that a host that cannot run jobs (no idmapped mounts under
        overlay for user namespaces, say) fails at start with its reason, not at every job."""
        c = self.config
        probe = RuntimeSpec.shell(f"probe-{uuid.uuid4().hex[:12]}", ":", c.rootfs, memory_bytes=c.default_memory_bytes)
        try:
            result = self.launcher.run(probe, timeout=60)
        except (LclusterdError, TimeoutError) as exc:
            raise StartupError(f"the runtime cannot run a job: {exc}") from None
        if result.status == "EXITED" and result.exit_code == 0:
            return
        hint = ""
        if c.userns == "on" and result.error.startswith(("idmapped rootfs", "user namespace")):
            hint = (f" (user namespaces need Linux 5.19 or later, this is {os.uname().release}, and a rootfs on a "
                    "filesystem with idmapped mounts: ext4, xfs, btrfs; or start with --userns off)")
        raise StartupError(f"the runtime cannot run a job: {result.error or result.status}{hint}")

    def _on_runtime_event(self, event) -> None:
        if self.worker is not None:
            self.worker.on_runtime_event(event)

    def _on_runtime_helper_exit(self) -> None:
        # Without its fork server this node can only fail jobs: stop (its running jobs
        # were recorded FAILED) and exit non-zero, so that a supervisor restarts it.
        log.error("the runtime helper (fork server) exited unexpectedly; stopping this node")
        self.runtime_lost = True
        self.stop_requested.set()

    def _wait_for_etcd(self) -> None:
        deadline = time.monotonic() + self.config.etcd_wait
        warned = False
        while True:
            try:
                self.store.revision()
                return
            except StoreUnavailable as exc:
                if time.monotonic() > deadline or self.stop_requested.is_set():
                    raise StartupError(str(exc)) from None
                if not warned:
                    log.warning("waiting for etcd: %s", exc)
                    warned = True
                time.sleep(0.2)

    def _bind_server(self) -> None:
        c = self.config
        # MAX_BLOCKING of these threads may sit in Wait/Logs(follow); the rest serve the quick calls
        server = grpc.server(ThreadPoolExecutor(max_workers=MAX_BLOCKING + 64, thread_name_prefix="grpc"),
                             options=[("grpc.so_reuseport", 0)])
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        address = f"[{c.bind_host}]:{c.port}" if ":" in c.bind_host else f"{c.bind_host}:{c.port}"
        try:
            server.add_insecure_port(address)
        except RuntimeError:
            raise StartupError(f"cannot listen on {address}: the port is in use or the address is not on this host "
                               "(is another lclusterd running? pick another with --listen)") from None
        sock = Path(c.socket_path)
        sock.unlink(missing_ok=True)
        old_umask = os.umask(0o077)  # the socket is root-only from its first moment
        try:
            server.add_insecure_port(f"unix:{sock}")
        except RuntimeError:
            raise StartupError(f"cannot listen on unix:{sock}") from None
        finally:
            os.umask(old_umask)
        self.server = server

    # -- run and stop --------------------------------------------------------------------------
    def handle_signal(self, signum, _frame) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s: shutting down (%s running jobs)", signal.Signals(signum).name,
                     "killing" if self.config.on_shutdown == "kill" else "waiting for")
            self.stop_requested.set()
        elif self.worker is not None:
            log.warning("second %s: killing the running jobs now", signal.Signals(signum).name)
            self.worker.kill_all_now()

    def wait(self) -> None:
        while not self.stop_requested.wait(0.5):
            pass

    def stop(self) -> None:
        """Stop taking jobs, end the running ones per --on-shutdown, record them, release the
        leases, stop the server and the embedded etcd. Safe after a partial start."""
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        if self.election is not None:
            self.election.stop()
        if self.worker is not None:
            self.worker.stop(kill_running=self.config.on_shutdown == "kill")
        elif self.launcher is not None:
            self.launcher.close(kill_running=True)
        if self.server is not None:
            self.server.stop(grace=1).wait(5)
            Path(self.config.socket_path).unlink(missing_ok=True)
        if self.events is not None:
            self.events.stop()
        if self.log_sweep is not None:
            self.log_sweep.stop()
        if self.peers is not None:
            self.peers.close()
        if self.session is not None:
            self.session.close()
        if self.store is not None:
            self.store.close()
        if self.etcd is not None:
            self.etcd.stop()
        log.info("stopped")


def _prime_duties(*duties):
    """PrimeElection's on_elected and on_deposed for several duties that run only on the prime
    (each with start(prime_revision) and stop())."""
    return lambda revision: [d.start(revision) for d in duties], lambda: [d.stop() for d in duties]


def run(config: Config) -> int:
    """Run a node until SIGTERM/SIGINT; returns the process exit status."""
    logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO),
                        format="lclusterd: %(levelname)s %(message)s")
    logging.getLogger("etcd3").setLevel(logging.CRITICAL)
    daemon = Daemon(config)
    signal.signal(signal.SIGTERM, daemon.handle_signal)
    signal.signal(signal.SIGINT, daemon.handle_signal)
    try:
        daemon.start()
    except StartupError as exc:
        logging.getLogger("lclusterd").error("%s", exc)
        daemon.stop()
        return EXIT_STARTUP_FAILURE
    daemon.wait()
    daemon.stop()
    return EXIT_STARTUP_FAILURE if daemon.runtime_lost else EXIT_OK
