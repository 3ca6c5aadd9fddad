"""The daemon's configuration: one Config, built once in __main__ and passed down. Pure
apart from name resolution in `check_listen_address` and the host facts (memory, pid_max)
that some defaults are derived from."""

from __future__ import annotations

import ipaddress
import json
import socket
import textwrap
import tomllib
from ipaddress import IPv4Network
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from lclusterd import limits
from lclusterd.cluster.placement import POLICIES
from lclusterd.model import DEFAULT_PIDS, NODE_NAME
from lclusterd.runtime.host import DEFAULT_ROOTFS, pid_max, total_memory
from lclusterd.units import format_size, parse_duration, parse_size, parse_size_or_share

DEFAULT_PORT = 64051
DEFAULT_STATE_DIR = "/var/lib/lclusterd"
DEFAULT_WEB_LISTEN = "127.0.0.1:8088"
DEFAULT_CONFIG_FILE = "/etc/lclusterd/lclusterd.toml"
SHUTDOWN_MODES = ("kill", "finish")
USERNS_MODES = ("on", "off")
DEFAULT_JOB_MEMORY = 1 << 30  # a job that sets no -mem; less where the node offers less
HOST_RESERVE = 512 << 20  # memory a node keeps back for its host by default (or 10 %, if more)
DEFAULT_MAX_LOG_SIZE = "100M"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
DEFAULT_BRIDGE = "lcl0"
DEFAULT_CLUSTER_SUBNET = "10.88.0.0/16"  # one /24 per node: 256 nodes
MAX_JOBS_PER_USER = 10**9
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"  # loopback: docs/operations.md, "Who may read metrics"


class ConfigError(ValueError):
    """A configuration value the daemon cannot start with; the message says which and why."""


@dataclass
class Config:
    namespace: str = "localhost"  # the address to bind and advertise (the original's -namespace)
    listen: str = str(DEFAULT_PORT)  # PORT, or HOST:PORT to bind another address than namespace
    etcd: list[str] = field(default_factory=list)  # empty: start an embedded etcd
    # TLS to an external etcd (etcd_tls.check_external says what goes together); the embedded
    # etcd makes its own under <state-dir>/etcd-tls
    etcd_cacert: str = ""
    etcd_cert: str = ""
    etcd_key: str = ""
    rootfs: str = DEFAULT_ROOTFS
    state_dir: str = DEFAULT_STATE_DIR
    node_name: str = field(default_factory=socket.gethostname)
    cgroup_root: str = "lclusterd"  # the cgroup every node's parent cgroup is under
    capacity: int = 256
    max_jobs_per_user: int = 100_000  # jobs (any state, until removed after keep) one user may have; 0: no limit
    max_running_per_user: int = 0  # when prime: most jobs of one owner assigned or running at once; 0: no limit
    prefix: str = "/lclusterd"
    keep: str = "7d"  # how long ended jobs' records, tombstones and logs are kept
    insecure: bool = False  # plain TCP, every caller an admin (labs and tests)
    tls_dir: str = ""  # the CA and this node's certificate: TCP with mutual TLS
    web_listen: str = DEFAULT_WEB_LISTEN  # HOST:PORT of the web page and its JSON API; empty: none
    on_shutdown: str = "kill"
    lease_ttl: int = 5
    default_pids: int = DEFAULT_PIDS
    kill_grace: float = 2.0
    etcd_timeout: float = 3.0
    etcd_wait: float = 30.0  # how long start-up waits for etcd to answer
    log_level: str = "info"
    log_format: str = "text"  # stderr: "lclusterd: LEVEL message" lines, or one JSON object per line
    metrics_listen: str = DEFAULT_METRICS_LISTEN  # HOST:PORT of the Prometheus endpoint; empty: none
    scheduling: str = "prime-first"  # how the prime (when this node is prime) places jobs
    memory: str = ""  # memory offered to jobs, e.g. 4G; empty: the host's MemTotal less a reserve
    default_mem: str = ""  # memory limit of a job that sets none; empty: 1 GiB (or --memory, if less)
    max_pids: int = 0  # processes all of this node's jobs may have together; 0: half the kernel's pid_max
    max_log_size: str = DEFAULT_MAX_LOG_SIZE  # most bytes kept of each job's stdout and of its stderr
    max_log_space: str = "10%"  # all job logs of this node: a size, or a share of their disk; 0: no limit
    userns: str = "on"  # every job in a user namespace of its own ("off": a job's root is the host's root)
    bridge: str = DEFAULT_BRIDGE  # the bridge of jobs with -net bridge; empty: this node offers no job network
    subnet: str = ""  # its jobs' subnet; empty: a /24 of cluster_subnet claimed in etcd
    cluster_subnet: str = DEFAULT_CLUSTER_SUBNET  # where nodes without --subnet claim theirs
    volume_root: list[str] = field(default_factory=list)  # host directories jobs' volumes may come from

    def __post_init__(self) -> None:
        if isinstance(self.etcd, str):
            self.etcd = [e.strip() for e in self.etcd.split(",") if e.strip()]
        self.volume_root = [self.volume_root] if isinstance(self.volume_root, str) else list(self.volume_root)

    @property
    def bind_host(self) -> str:
        host, _ = self._split_listen()
        return host

    @property
    def port(self) -> int:
        return self._split_listen()[1]

    @property
    def serves_tcp(self) -> bool:
        """TCP is served with mutual TLS (--tls-dir) or, for labs and tests, plain (--insecure);
        otherwise only the Unix socket."""
        return bool(self.tls_dir) or self.insecure

    @property
    def address(self) -> str:
        """host:port clients and peers use to reach this node (what nodes/<name> advertises);
        "" when it serves no TCP."""
        return f"{self.namespace}:{self.port}" if self.serves_tcp else ""

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) the metrics are served on; None when --metrics-listen is empty."""
        text = str(self.metrics_listen).strip()
        if not text:
            return None
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"--metrics-listen must be HOST:PORT (e.g. {DEFAULT_METRICS_LISTEN}) or empty, not {text!r}")
        return host, int(port)

    @property
    def private_socket_path(self) -> str:
        """Where the gRPC server listens for the socket gate's relayed connections (0700 dir)."""
        return str(Path(self.state_dir) / "private" / "api.sock")

    @property
    def socket_path(self) -> str:
        return str(Path(self.state_dir) / "lclusterd.sock")

    @property
    def web_address(self) -> tuple[str, int] | None:
        """(host, port) of the web page (--web-listen HOST:PORT, or PORT on loopback); None: none."""
        text = str(self.web_listen).strip()
        if not text:
            return None
        host, _, port = text.rpartition(":")
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"--web-listen must be HOST:PORT (or empty for no web page), not {text!r}") from None
        if not 1 <= number <= 65535:
            raise ConfigError(f"--web-listen port must be between 1 and 65535, not {number}")
        return host.strip("[]") or "127.0.0.1", number

    @property
    def web_url(self) -> str:
        """http://HOST:PORT of the web page as a browser on this host reaches it ("" for none): a
        wildcard address is reached by --namespace."""
        address = self.web_address
        if address is None:
            return ""
        host = self.namespace if address[0] in ("0.0.0.0", "::") else address[0]
        return f"http://[{host}]:{address[1]}" if ":" in host else f"http://{host}:{address[1]}"

    @property
    def cgroup_parent(self) -> str:
        """Each node's jobs get their own parent cgroup under `lclusterd`, so daemons
        sharing a host never sweep each other's jobs."""
        return f"{self.cgroup_root}/{self.node_name}"

    @property
    def memory_bytes(self) -> int:
        """Memory this node offers to jobs, and the ceiling of its jobs' parent cgroup: --memory,
        else the host's MemTotal less 10 % (at least HOST_RESERVE) for the host itself."""
        if self.memory:
            return self._size("--memory", self.memory)
        total = total_memory()
        return max(total - max(HOST_RESERVE, total // 10), total // 2)

    @property
    def default_memory_bytes(self) -> int:
        if self.default_mem:
            return self._size("--default-mem", self.default_mem)
        return min(DEFAULT_JOB_MEMORY, self.memory_bytes)

    @property
    def max_pids_value(self) -> int:
        """Processes all of this node's jobs may have together (its parent cgroup's pids.max)."""
        return self.max_pids or max(pid_max() // 2, 1)

    @property
    def max_log_bytes(self) -> int:
        return self._size("--max-log-size", self.max_log_size)

    @staticmethod
    def _size(option: str, text: str) -> int:
        try:
            return parse_size(str(text))
        except ValueError as exc:
            raise ConfigError(f"bad {option} value {text!r}: {exc}") from None

    @property
    def keep_seconds(self) -> float:
        try:
            return parse_duration(str(self.keep))
        except ValueError as exc:
            raise ConfigError(f"bad --keep value {self.keep!r}: {exc}") from None

    def _split_listen(self) -> tuple[str, int]:
        text = str(self.listen).strip()
        host, _, port = text.rpartition(":")
        host = host.strip("[]") or self.namespace
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"--listen must be PORT or HOST:PORT, not {text!r}") from None
        if not 1 <= number <= 65535:
            raise ConfigError(f"--listen port must be between 1 and 65535, not {number}")
        return host, number

    def validate(self) -> None:
        """Raise ConfigError for the first bad value (before anything is started)."""
        self._split_listen()
        if not NODE_NAME.match(self.node_name or ""):
            raise ConfigError(f"--node-name must be letters, digits, '.', '_' or '-' (at most 63), not {self.node_name!r}")
        if not NODE_NAME.match(self.cgroup_root or ""):
            raise ConfigError(f"--cgroup-root must be one cgroup name (letters, digits, '.', '_' or '-'), "
                              f"not {self.cgroup_root!r}")
        for option, value in (("--max-jobs-per-user", self.max_jobs_per_user),
                              ("--max-running-per-user", self.max_running_per_user)):
            if not 0 <= value <= MAX_JOBS_PER_USER:
                raise ConfigError(f"{option} must be between 0 and {MAX_JOBS_PER_USER}, not {value}")
        if self.capacity < 1:
            raise ConfigError(f"--capacity must be at least 1, not {self.capacity}")
        if self.on_shutdown not in SHUTDOWN_MODES:
            raise ConfigError(f"--on-shutdown must be one of {', '.join(SHUTDOWN_MODES)}, not {self.on_shutdown!r}")
        if not self.prefix.startswith("/") or any(c.isspace() for c in self.prefix):
            raise ConfigError(f"--prefix must be an absolute key path like /lclusterd, not {self.prefix!r}")
        self.keep_seconds  # raises ConfigError on a bad --keep
        if not Path(self.rootfs).is_absolute():
            raise ConfigError(f"--rootfs must be an absolute path, not {self.rootfs!r}")
        if not Path(self.state_dir).is_absolute():
            raise ConfigError(f"--state-dir must be an absolute path, not {self.state_dir!r}")
        if self.scheduling not in POLICIES:
            raise ConfigError(f"--scheduling must be one of {', '.join(POLICIES)}, not {self.scheduling!r}")
        if self.lease_ttl < 1:
            raise ConfigError(f"lease TTL must be at least 1 second, not {self.lease_ttl}")
        if not 0 <= self.kill_grace <= limits.MAX_GRACE_SECONDS:
            raise ConfigError(f"--kill-grace must be between 0 and {limits.MAX_GRACE_SECONDS:g} seconds, not {self.kill_grace:g}")
        if not 0.1 <= self.etcd_timeout <= 60:
            raise ConfigError(f"--etcd-timeout must be between 0.1 and 60 seconds, not {self.etcd_timeout:g}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        if self.userns not in USERNS_MODES:
            raise ConfigError(f"--userns must be on or off, not {self.userns!r}")
        self.web_address  # raises ConfigError on a bad --web-listen
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}")
        self.metrics_address  # raises ConfigError on a bad --metrics-listen
        self._validate_ceilings()
        self._validate_offer()

    def _validate_offer(self) -> None:
        """The job network's subnets and the volume roots as written (offer.py checks the rest at start)."""
        for option, text in (("--subnet", self.subnet), ("--cluster-subnet", self.cluster_subnet)):
            try:
                network = IPv4Network(text) if text else None
            except ValueError as exc:
                raise ConfigError(f"{option} must be an IPv4 network like {DEFAULT_CLUSTER_SUBNET}, not {text!r} ({exc})") from None
            if option == "--cluster-subnet" and network is not None and network.prefixlen > 24:
                raise ConfigError(f"--cluster-subnet must be a /24 or larger (each node takes a /24), not {text}")
        for root in self.volume_root:
            if not isinstance(root, str) or not root.startswith("/"):
                raise ConfigError(f"--volume-root must be an absolute directory, not {root!r}")

    def _validate_ceilings(self) -> None:
        offered, default = self.memory_bytes, self.default_memory_bytes
        if not limits.MIN_MEMORY_BYTES <= offered <= limits.MAX_MEMORY_BYTES:
            raise ConfigError(f"--memory must be between 1 MiB and 1 PiB, not {format_size(offered)}")
        if not limits.MIN_MEMORY_BYTES <= default <= offered:
            raise ConfigError(f"--default-mem must be between 1 MiB and --memory ({format_size(offered)}), "
                              f"not {format_size(default)}")
        if not 1 <= self.max_pids_value <= limits.MAX_PIDS:
            raise ConfigError(f"--max-pids must be between 1 and {limits.MAX_PIDS}, not {self.max_pids}")
        if not 1 <= self.default_pids <= self.max_pids_value:
            raise ConfigError(f"--default-pids must be between 1 and --max-pids ({self.max_pids_value}), "
                              f"not {self.default_pids}")
        if self.max_log_bytes < limits.MIN_LOG_BYTES:
            raise ConfigError(f"--max-log-size must be at least {limits.MIN_LOG_BYTES} bytes, not {self.max_log_size!r}")
        try:
            parse_size_or_share(str(self.max_log_space))
        except ValueError as exc:
            raise ConfigError(f"bad --max-log-space value {self.max_log_space!r}: {exc}") from None

    def check_listen_address(self) -> None:
        """The TCP address must resolve (when TCP is served at all), and plain TCP, where every
        caller is an admin, is served on loopback only: anyone who reaches it runs jobs as root."""
        if not self.serves_tcp:
            return
        host = self.bind_host
        try:
            found = socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConfigError(f"cannot resolve the listen address {host!r}: {exc.strerror}") from None
        if self.tls_dir and self.insecure:
            raise ConfigError("--tls-dir and --insecure exclude each other: TCP is served with mutual TLS or plain")
        if self.insecure and not all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in found):
            raise ConfigError(f"--insecure serves plain TCP, where every caller is an admin, on a loopback address only, "
                              f"and {host} is not one: serve other hosts with --tls-dir (lclusterd certs makes the "
                              "certificates)")


def defaults() -> dict[str, Any]:
    """Each option's default, as the Config dataclass declares it (not the derived ones)."""
    return {f.name: f.default for f in fields(Config) if f.default is not MISSING}


def option_names() -> list[str]:
    return [f.name for f in fields(Config)]


def load_file(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file (keys as the long options, with '-' or '_'). ConfigError on
    a file that cannot be read or parsed, or an unknown key."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    known = set(option_names())
    result = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"config file {path}: unknown option {key!r}")
        result[name] = ",".join(value) if name == "etcd" and isinstance(value, list) else value
    return result


def commented_file(options: list[tuple[str, Any, str]]) -> str:
    """The text of a config file with every option of `options` ((name, default, help), in
    the order the command line lists them) commented out at its default, each under its
    help: what `lclusterd config-template` prints and `make install` puts in place. Pure."""
    lines = ["# lclusterd's configuration (TOML). Every option is shown commented out at its default;",
             "# uncomment and change the ones you need. The command line and LCLUSTERD_<OPTION>",
             "# environment variables override this file. Written by `lclusterd config-template`."]
    for name, default, text in options:
        lines.append("")
        lines += ["# " + line for line in textwrap.wrap(text, 88, break_on_hyphens=False, break_long_words=False)]
        lines.append(f"# {name.replace('_', '-')} = {_toml_value(default)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return json.dumps([str(v) for v in value])  # a TOML array of basic strings
    return json.dumps("" if value is None else str(value))  # a TOML basic string: JSON's escapes are TOML's
