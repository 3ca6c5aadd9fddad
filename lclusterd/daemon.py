"""Wiring of one lclusterd node: runtime helper, etcd (embedded or given), node lease, worker,
prime election + scheduler, gRPC server, and an orderly shutdown on SIGTERM/SIGINT.

Order matters: the daemon only ever starts processes that exec at once (the runtime helper,
the embedded etcd), never a fork that goes on running Python (gRPC Python does not support
fork). The runtime helper starts once etcd answers: its job subnet may be claimed there.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from grpc_health.v1 import health_pb2

from lclusterd import __version__
from lclusterd.api.gate import UnixGate
from lclusterd.api.identity import Authenticator
from lclusterd.api.listen import SERVICE_NAME, ListenError, bind_server
from lclusterd.api.peers import Peers
from lclusterd.api.tls import LiveTls, TlsError
from lclusterd.api.servicer import ApiServices, JobsServicer
from lclusterd.cluster.admission import Admission, JobQuota
from lclusterd.cluster.events import JobEvents
from lclusterd.cluster.execs import Execs
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.journal import Journal
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.listindex import history_duties
from lclusterd.cluster.logs import LogFiles
from lclusterd.cluster.lookup import Lookup
from lclusterd.cluster.node import NodeDirectory, NodeSession
from lclusterd.cluster.offer import OfferError, node_offer
from lclusterd.cluster.pools import Pools
from lclusterd.cluster.prime import PrimeElection, prime_duties
from lclusterd.cluster.logspace import LogSpace, limit_of
from lclusterd.cluster.retention import LogSweep
from lclusterd.cluster.runspec import NodeDefaults
from lclusterd.cluster.scheduler import Scheduler
from lclusterd.cluster.store import Store, StoreTls
from lclusterd.cluster.watch import Watches
from lclusterd.cluster.worker import Worker
from lclusterd.config import Config, ConfigError
from lclusterd.errors import LclusterdError, StoreUnavailable
from lclusterd.etcd_embedded import EtcdStartError
from lclusterd.etcd_supervisor import start_embedded
from lclusterd.etcd_tls import ClientFiles, EtcdTlsError, check_external
from lclusterd.model import NodeInfo
from lclusterd.operations import MetricsStartError, NodeOperations, configure_logging
from lclusterd.rpc import lclusterd_pb2_grpc as pb_grpc
from lclusterd.runtime import host, userns
from lclusterd.runtime.cgroups import NodeLimits
from lclusterd.runtime.images.store import ImageStore
from lclusterd.runtime.launcher import IdRanges, Launcher
from lclusterd.runtime.spec import RuntimeSpec
from lclusterd.web.app import create_app
from lclusterd.web.calls import WebCalls
from lclusterd.web.server import WebServer, WebStartError, bind_web

log = logging.getLogger("lclusterd")

EXIT_OK = 0
# The node could not start, or lost its fork server or its embedded etcd while running: a
# supervisor should look at the log (the reason is its last line) and start it again.
EXIT_FAILURE = 3


class StartupError(Exception):
    """The daemon cannot start; the message is one line for the operator."""


class Daemon:
    """One node. start() runs the start-up phases in order; each registers the teardown of what
    it started, so stop() undoes exactly what started, in reverse order, after a failed start
    as after a clean one."""

    def __init__(self, config: Config):
        self.config = config
        self.stop_requested = threading.Event()
        self._signals = 0
        self.runtime_lost = False  # the fork server died under us: exit non-zero
        self.etcd_lost = False  # the embedded etcd died and could not be started again: likewise
        self._teardown = ExitStack()
        self._server_stopped = False
        self.gate: UnixGate | None = None
        self.worker: Worker | None = None
        self.web: WebServer | None = None
        self.web_page = None
        self.tls: LiveTls | None = None  # with --tls-dir; read again on SIGHUP

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        for phase in (self._check_config, self._bind_listeners, self._connect_etcd, self._start_runtime,
                      self._join_cluster, self._serve):
            phase()

    def _check_config(self) -> None:
        c = self.config
        try:
            c.validate()
            c.check_listen_address()
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        if not Path(c.rootfs, "bin", "sh").exists():
            raise StartupError(f"rootfs {c.rootfs} has no /bin/sh (build one with: make rootfs, "
                               f"or sh rootfs/build.sh busybox {c.rootfs})")
        self.state = Path(c.state_dir)
        self.state.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(self.state, 0o711)  # the group's members reach the socket in it; the rest is in 0700 dirs
        self.logs = LogFiles(self.state / "logs")
        self.journal = Journal(self.state / "journal", c.node_name)
        self.images = ImageStore(self.state, c.rootfs)  # <state-dir>/images, and the rootfs as busybox
        try:
            self.etcd_files = check_external(c.etcd, c.etcd_cacert, c.etcd_cert, c.etcd_key)
            self.logs.prepare()
            self.journal.open()  # its OSError names the directory
        except (EtcdTlsError, OSError) as exc:
            raise StartupError(str(exc)) from None
        self._teardown.callback(self.journal.close)

    def _start_runtime(self) -> None:
        """What the node offers (its job subnet claimed in etcd: offer.py), the fork server with
        it (fork+exec), then one job to prove jobs can run here."""
        c = self.config
        try:
            self.offer = node_offer(self.store, self.keys, c.node_name, c.bridge, c.subnet, c.cluster_subnet, c.volume_root)
            self.launcher = Launcher(self.state / "runtime", cgroup_parent=c.cgroup_parent, on_event=self._on_runtime_event,
                                     on_helper_exit=self._on_runtime_helper_exit, userns=self._user_namespaces(),
                                     node_limits=NodeLimits(c.memory_bytes, c.max_pids_value), **self.offer.launcher_options())
            self.launcher.start()
        except (LclusterdError, OfferError) as exc:
            raise StartupError(str(exc)) from None
        self._teardown.callback(self.launcher.close, kill_running=True)  # a no-op after the worker's stop
        self._probe_runtime()

    def _bind_listeners(self) -> None:
        """The listening sockets, so that a port in use fails before this node touches etcd."""
        c = self.config
        if c.tls_dir:
            try:
                self.tls = LiveTls(c.tls_dir, c.node_name, c.namespace)
            except TlsError as exc:
                raise StartupError(str(exc)) from None
        elif c.insecure:
            log.warning("--insecure: plain TCP on %s:%d, every caller an admin; use --tls-dir outside labs and tests",
                        c.bind_host, c.port)
        tcp = (f"[{c.bind_host}]:{c.port}" if ":" in c.bind_host else f"{c.bind_host}:{c.port}") if c.serves_tcp else None
        try:
            self.server, self.health = bind_server(tcp, self.tls.server_credentials() if self.tls else None,
                                                   c.private_socket_path)
        except ListenError as exc:
            raise StartupError(str(exc)) from None
        self._teardown.callback(self._stop_server)
        gate = UnixGate(c.socket_path, c.private_socket_path, f"lclusterd-{c.node_name}-{os.getpid()}")
        try:
            gate.bind()
        except OSError as exc:
            raise StartupError(f"cannot listen on unix:{c.socket_path}: {exc.strerror}") from None
        self.gate = gate
        self._bind_web()
        self.operations = self._started(NodeOperations(c), NodeOperations.stop)  # the metrics endpoint

    def _bind_web(self) -> None:
        """The web page's port (--web-listen) and its token key; serving starts in _serve."""
        c = self.config
        if c.web_address is None:
            return
        try:
            self.web, self.web_page = bind_web(c.web_address, c.web_url, self.state / "web.key")
        except WebStartError as exc:
            raise StartupError(str(exc)) from None
        if self.tls is not None:  # a token minted for a certificate ends when it is revoked
            self.web_page.tokens.revoked = self.tls.is_revoked
        self._teardown.callback(self.web.stop)

    def _connect_etcd(self) -> None:
        c = self.config
        endpoints, files = (c.etcd, self.etcd_files) if c.etcd else self._start_embedded_etcd()
        try:
            tls = StoreTls.read(files.cacert, files.cert, files.key) if files else None
            self.store = Store(endpoints, timeout=c.etcd_timeout, tls=tls)
        except ValueError as exc:
            raise StartupError(f"--etcd: {exc}") from None
        self._teardown.callback(self.store.close)
        self._wait_for_etcd()
        self.keys = Keys(c.prefix)
        self.watches = Watches(self.store)
        self._teardown.callback(self.watches.stop)
        try:
            self.watches.share(self.keys.prefix + "/")  # one etcd watch stream for all of them
        except StoreUnavailable as exc:
            raise StartupError(str(exc)) from None

    def _start_embedded_etcd(self) -> tuple[list[str], ClientFiles]:
        """This node's own etcd: TLS, root's alone, supervised (etcd_supervisor.py)."""
        try:
            supervisor = start_embedded(self.state, self._on_etcd_lost)
        except (EtcdTlsError, EtcdStartError) as exc:
            raise StartupError(str(exc)) from None
        self._teardown.callback(supervisor.close)
        return [supervisor.etcd.endpoint], supervisor.etcd.tls.client()

    def _join_cluster(self) -> None:
        """This node's services: job events, the log sweep and peers; then its registration,
        the worker and the prime election (stopped first at shutdown: last registered)."""
        c, store, watches, keys = self.config, self.store, self.watches, self.keys
        # At shutdown, stop listening before leaving the cluster and closing etcd (the binding
        # phase's registration is then a no-op; it is there for a start that fails earlier).
        self._teardown.callback(self._stop_server)
        self.jobs = Jobs(store, keys)
        self.info = NodeInfo(name=c.node_name, address=c.address, capacity=c.capacity, version=__version__,
                             started_at=time.time(), memory_bytes=c.memory_bytes, max_pids=c.max_pids_value,
                             cores=host.cores(), subnet=self.offer.subnet, volume_roots=self.offer.volume_roots)
        defaults = NodeDefaults(rootfs=c.rootfs, pids=c.default_pids, memory_bytes=c.default_memory_bytes,
                                kill_grace=c.kill_grace, max_log_bytes=c.max_log_bytes, images=self.images)
        try:
            self.events = self._started(JobEvents(store, watches, keys), JobEvents.stop)
            self._started(LogSweep(self.logs, c.keep_seconds, self.launcher.running), LogSweep.stop)
            self._started(LogSpace(self.logs, limit_of(c.max_log_space, str(self.logs.directory)), c.node_name,
                                   self.launcher.running), LogSpace.stop)
            self.peers = Peers(store, keys, c.node_name, self.tls.channel_credentials if self.tls else None)
            self._teardown.callback(self.peers.close)
            session = NodeSession(store, keys, self.info, ttl=c.lease_ttl, images=self.images)
            self.worker = Worker(store, watches, keys, self.jobs, c.node_name, self.launcher, defaults, self.logs,
                                 self.journal)
            session.on_lease_lost(self.worker.fence)
            session.register()
            self._teardown.callback(session.close)
            self.worker.start()
            # with the embedded etcd lost for good there is nothing to wait for: results are journaled
            self._teardown.callback(lambda: self.worker.stop(c.on_shutdown == "kill", 3 if self.etcd_lost else 15))
            self.scheduler = Scheduler(store, watches, keys, self.jobs, c.node_name, c.scheduling, c.max_running_per_user)
            duties = prime_duties(self.scheduler, *history_duties(store, keys, c.keep_seconds))  # + retention, -list's index
            self.election = self._started(PrimeElection(store, watches, keys, session, *duties), PrimeElection.stop)
            self.states = self.operations.follow_jobs(store, watches, keys, self._teardown)  # the last share
        except StoreUnavailable as exc:
            raise StartupError(str(exc)) from None

    def _serve(self) -> None:
        c = self.config
        quota = JobQuota(c.max_jobs_per_user, self.states.owned_by)  # users' jobs in etcd, counted from the watch
        services = ApiServices(node=c.node_name, jobs=self.jobs, admission=Admission(self.jobs, self.info, self.scheduler, quota),
                               lookup=Lookup(self.jobs, Pools(self.jobs)), nodes=NodeDirectory(self.store, self.keys),
                               events=self.events, logs=self.logs, peers=self.peers, states=self.states,
                               web=self.web_page, execs=Execs(self.launcher))
        authenticator = Authenticator(self.gate.identity, *([self.tls.is_revoked] if self.tls else []))
        pb_grpc.add_JobsServicer_to_server(JobsServicer(services, authenticator), self.server)
        self.server.start()
        self.gate.start()
        if self.web is not None:
            self.web.serve(create_app(WebCalls(services), self.web_page.tokens, c.node_name))
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._teardown.callback(self.health.enter_graceful_shutdown)
        tcp = f"{c.bind_host}:{c.port} ({'mutual TLS' if c.tls_dir else 'plain, --insecure'}) and " if c.serves_tcp else ""
        web = f"; web page {c.web_url}" if self.web is not None else ""
        self.operations.serving(self.launcher.running, self.worker.memory_requested, lambda: self.election.is_prime)
        log.info("node %s serving on %sunix:%s; etcd at %s; rootfs %s%s", c.node_name, tcp, c.socket_path,
                 self.store.describe(), c.rootfs, web + self.operations.where)

    def _started(self, service, stop):
        """Start `service` and have shutdown call `stop(service)`."""
        service.start()
        self._teardown.callback(stop, service)
        return service

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

    def _on_etcd_lost(self, why: str) -> None:
        # As without the fork server: without etcd a node can neither report nor take jobs (its
        # results are journaled; the restart a supervisor makes writes them).
        log.error("%s; stopping this node", why)
        self.etcd_lost = True
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

    def _stop_server(self) -> None:
        """Stop listening: the socket gate, then the gRPC server (idempotent)."""
        if self._server_stopped:
            return
        self._server_stopped = True
        if self.gate is not None:
            self.gate.stop()
        if self.web is not None:
            self.web.stop()
        self.server.stop(grace=1).wait(5)

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

    def handle_reload(self, _signum, _frame) -> None:
        """SIGHUP: read --tls-dir again (certificate, key, CA, revocations); nothing else reloads."""
        if self.tls is None:
            log.info("SIGHUP: nothing to reload (no --tls-dir)")
            return
        try:
            log.info("SIGHUP: reloaded --tls-dir %s: %s", self.config.tls_dir, self.tls.reload().describe())
        except TlsError as exc:
            log.error("SIGHUP: kept the certificates in use: %s", exc)

    def wait(self) -> None:
        while not self.stop_requested.wait(0.5):
            pass

    def stop(self) -> None:
        """Undo what start() did, last first: stop taking jobs, end the running ones per
        --on-shutdown and record them, release the leases, close etcd, stop listening."""
        self._teardown.close()
        log.info("stopped")


def run(config: Config) -> int:
    """Run a node until SIGTERM/SIGINT; returns the process exit status."""
    configure_logging(config.log_level, config.log_format, quiet=("etcd3",))
    daemon = Daemon(config)
    signal.signal(signal.SIGTERM, daemon.handle_signal)
    signal.signal(signal.SIGINT, daemon.handle_signal)
    signal.signal(signal.SIGHUP, daemon.handle_reload)  # its default would end the node without a shutdown
    try:
        daemon.start()
    except (StartupError, MetricsStartError) as exc:
        logging.getLogger("lclusterd").error("%s", exc)
        daemon.stop()
        return EXIT_FAILURE
    daemon.wait()
    daemon.stop()
    return EXIT_FAILURE if daemon.runtime_lost or daemon.etcd_lost else EXIT_OK
