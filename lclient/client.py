"""JobsClient: one channel to an lclusterd node, a deadline per call, and every grpc.RpcError
turned into one of lclient.errors (with the sentence the daemon sent).

Where it connects (Target): `-server unix:PATH` or `-server HOST:PORT`; with neither, the
local node's Unix socket when this user can use it, else 127.0.0.1:64051. Over TCP with
`-tls-dir DIR`, mutual TLS with DIR/ca.pem and the user's DIR/USER.pem, DIR/USER-key.pem."""

from __future__ import annotations

import os
from typing import Iterator, NamedTuple  # (not dataclasses: it imports inspect, a tenth of a -check's start)

from lclient import errors
from lclient.lazy import LazyModule
from lclusterd.rpc.metadata import CALL_TIMEOUT, ERROR_METADATA_KEY

# Loaded when the first client is made (lclient's -h and usage errors never need them; they
# cost several times the interpreter's start, see README "lclient's start-up").
grpc = LazyModule("grpc")
pb = LazyModule("lclusterd.rpc.lclusterd_pb2")
pb_grpc = LazyModule("lclusterd.rpc.lclusterd_pb2_grpc")
SERVICE = "lclusterd.v1.Jobs"  # lclusterd.proto's package and service: the calls' paths

LOCAL_SOCKET = "/var/lib/lclusterd/lclusterd.sock"  # the node's, under its default --state-dir
DEFAULT_TCP = "127.0.0.1:64051"
GROUP = "lclusterd"  # whose members may use a node's Unix socket
SERVER_ENV = "LCLUSTER_SERVER"
TLS_DIR_ENV = "LCLUSTER_TLS_DIR"
USER_ENV = "LCLUSTER_USER"
# what a refused handshake looks like in gRPC's UNAVAILABLE details: a TLS listener closes the
# connection of a client without an acceptable certificate ("Socket closed"), as the node's
# Unix-socket gate does for a uid it does not accept; the client's own checks of the server
# fail with the TLS library's words
# how gRPC says the other end closed a connection it had accepted
_CLOSED_WORDS = ("socket closed", "connection reset", "broken pipe", "end of file")
_REFUSAL_WORDS = ("handshake", "ssl", "certificate", "verification", "permission denied")


class Target(NamedTuple):
    """Where and as whom lclient connects."""

    server: str  # "unix:PATH" or "HOST:PORT"
    tls_dir: str = ""  # mutual TLS over TCP: DIR/ca.pem, DIR/<user>.pem, DIR/<user>-key.pem
    user: str = ""  # whose certificate (default: the login name)

    @property
    def is_unix(self) -> bool:
        return self.server.startswith("unix:")

    @staticmethod
    def choose(server: str | None = None, tls_dir: str | None = None, user: str | None = None) -> Target:
        """The target from the options, else the environment, else the defaults."""
        tls_dir = tls_dir or os.environ.get(TLS_DIR_ENV) or ""
        user = user or os.environ.get(USER_ENV) or ""
        server = server or os.environ.get(SERVER_ENV) or default_server(tcp=bool(tls_dir))
        for scheme in ("http://", "grpc://"):
            if server.startswith(scheme):
                server = server[len(scheme):]
        return Target(server, tls_dir, user)


def default_server(tcp: bool = False) -> str:
    """The local node's socket when this user may connect to it (root, or a member of the
    group lclusterd), else loopback TCP (also when TLS is asked for)."""
    if not tcp and os.access(LOCAL_SOCKET, os.R_OK | os.W_OK):
        return f"unix:{LOCAL_SOCKET}"
    return DEFAULT_TCP


def channel_for(target: Target) -> grpc.Channel:
    options = [("grpc.enable_http_proxy", 0)]
    if not target.tls_dir or target.is_unix:
        return grpc.insecure_channel(target.server, options=options)
    return grpc.secure_channel(target.server, _credentials(target), options=options)


def _credentials(target: Target) -> grpc.ChannelCredentials:
    import getpass
    from pathlib import Path

    directory, user = Path(target.tls_dir), target.user or getpass.getuser()
    files = [directory / "ca.pem", directory / f"{user}.pem", directory / f"{user}-key.pem"]
    try:
        ca, cert, key = (path.read_bytes() for path in files)
    except OSError as exc:
        raise errors.InvalidRequest(f"cannot read {exc.filename}: {exc.strerror} (a user's certificate is made with: "
                                    f"lclusterd certs user {directory} {user})") from None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def _in_group(name: str) -> bool:
    import grp

    try:
        return grp.getgrnam(name).gr_gid in os.getgroups()
    except KeyError:
        return False


def speaks_tls(server: str) -> bool:
    """Whether HOST:PORT answers a TLS handshake (one without a client certificate, which a
    TLS 1.3 server refuses only after the handshake, or with an alert)."""
    import socket
    import ssl

    host, _, port = server.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2) as raw:
            with context.wrap_socket(raw):
                return True
    except ssl.SSLError as exc:
        return "ALERT" in str(exc).upper()
    except (OSError, ValueError):
        return False


class JobsClient:
    """Calls to one node. `one_shot`: for a process that makes a call or two and exits (lclient):
    each unary call without TLS goes on a connection of its own without gRPC (lclient/wire.py),
    which costs a fraction of importing gRPC; streams, TLS and whatever wire.py cannot deliver
    use the gRPC channel, made on first use. Without it, every call shares one gRPC channel."""

    def __init__(self, target: Target | str | None = None, timeout: float = CALL_TIMEOUT, one_shot: bool = False):
        self.target = target if isinstance(target, Target) else Target.choose(target)
        self.server = self.target.server
        self.timeout = timeout
        self._wire = one_shot and (self.target.is_unix or not self.target.tls_dir)
        self._channel = None if self._wire else channel_for(self.target)  # TLS files are read (and refused) now
        self._grpc_stub = None

    @property
    def _stub(self):
        if self._grpc_stub is None:
            if self._channel is None:
                self._channel = channel_for(self.target)
            self._grpc_stub = pb_grpc.JobsStub(self._channel)
        return self._grpc_stub

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------
    def add(self, spec: pb.JobSpec, all_nodes: bool = False, array: pb.ArraySpec | None = None) -> pb.AddReply:
        """Queue a job; with all_nodes, a pool (one member per ready node), with `array` an array
        (one member per index): the reply's id is the pool's or the array's."""
        return self._unary("Add", pb.AddRequest(spec=spec, all_nodes=all_nodes, array=array), pb.AddReply)

    def add_batch(self, specs: list[pb.JobSpec]) -> list[pb.Job]:
        """Queue one job per spec in one call (all or none); the jobs in order."""
        return list(self._unary("Add", pb.AddRequest(batch=specs), pb.AddReply).job.members)

    def check(self, job_id: str) -> pb.Job:
        """The job, or for a pool id the pool (is_pool set, every member in `members`)."""
        return self._unary("Check", pb.JobRef(id=job_id), pb.Job)

    def kill(self, job_id: str) -> pb.Job:
        return self._unary("Kill", pb.JobRef(id=job_id), pb.Job)

    def list(self, states: list[str] | None = None, limit: int = 0, expand_arrays: bool = False) -> list[pb.Job]:
        request = pb.ListRequest(states=states or [], limit=limit, expand_arrays=expand_arrays)
        return list(self._unary("List", request, pb.ListReply).jobs)

    def nodes(self) -> list[pb.Node]:
        return list(self._unary("Nodes", pb.NodesRequest(), pb.NodesReply).nodes)

    def drain(self, node: str, drain: bool = True) -> pb.Node:
        return self._unary("Drain", pb.DrainRequest(node=node, drain=drain), pb.Node)

    def web_login(self) -> pb.WebLoginReply:
        """A login link to the node's web page, and a token for its JSON API."""
        return self._unary("WebLogin", pb.WebLoginRequest(), pb.WebLoginReply)

    def logs(self, job_id: str, follow: bool = False) -> Iterator[pb.LogChunk]:
        return self._stream(self._stub.Logs(pb.LogsRequest(id=job_id, follow=follow),
                                            timeout=None if follow else self.timeout))

    def exec(self, job_id: str, command: str, stdin: bytes = b"") -> Iterator[pb.ExecChunk]:
        """Run `command` inside the running job: its output chunks, then its end (`ended`)."""
        return self._stream(self._stub.Exec(pb.ExecRequest(id=job_id, command=command, stdin=stdin), timeout=None))

    def events(self) -> Iterator[pb.JobEvent]:
        """Every change of a job's state from now on (the caller's jobs, or all for an admin),
        until the caller stops iterating."""
        return self._stream(self._stub.Events(pb.EventsRequest(), timeout=None))

    def wait(self, job_id: str, timeout: float | None = None) -> pb.Job:
        deadline = None if timeout is None else timeout + self.timeout
        return self._unary("Wait", pb.WaitRequest(id=job_id, timeout_seconds=timeout or 0), pb.Job, deadline)

    # -- errors ------------------------------------------------------------------------------
    def _stream(self, stream) -> Iterator:
        """A server stream's messages; errors as the client's, the call cancelled when the
        caller stops iterating."""
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise self._translate(exc) from None
        finally:
            stream.cancel()

    def _unary(self, method: str, request, reply_type, timeout: float | None | str = "default"):
        timeout = self.timeout if timeout == "default" else timeout
        if self._wire:
            from lclient import wire

            body = request.SerializeToString()
            if wire.fits(body):
                try:
                    reply = wire.unary(self.server, f"/{SERVICE}/{method}", body, timeout, ERROR_METADATA_KEY)
                except wire.NotDelivered:
                    pass  # gRPC's client makes the call, and says what went wrong as it always has
                else:
                    if reply.code != "OK":
                        raise self._error(reply.code, reply.details, reply.ours)
                    return reply_type.FromString(reply.body)
        return self._call(getattr(self._stub, method), request, timeout)

    def _call(self, method, request, timeout: float | None | str = "default"):
        try:
            return method(request, timeout=self.timeout if timeout == "default" else timeout)
        except grpc.RpcError as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: grpc.RpcError) -> errors.ClientError:
        ours = any(k == ERROR_METADATA_KEY for k, _ in (exc.trailing_metadata() or ()))
        return self._error(exc.code().name, exc.details() or "", ours)

    def _error(self, code: str, details: str, ours: bool) -> errors.ClientError:
        """The client error for a call that ended with status `code` (its name); `ours`: the
        node answered it (else gRPC's client or transport did)."""
        if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return errors.Refused(details)
        if code == "UNAVAILABLE" and not ours and self._refused(details.lower()):
            return errors.Refused(self._refusal())
        if code == "UNAVAILABLE" and not ours:
            return errors.ServerUnreachable(
                f"cannot reach lclusterd at {self.server} (is it running? choose another with -server or {SERVER_ENV})")
        if code == "DEADLINE_EXCEEDED" and not ours:
            return errors.ServerUnreachable(f"lclusterd at {self.server} did not answer within {self.timeout:g}s")
        if code == "UNAVAILABLE":
            return errors.Unavailable(f"lclusterd at {self.server} cannot serve the request: {details}")
        if code == "RESOURCE_EXHAUSTED" and not ours and "larger than max" in details:
            return errors.InvalidRequest(f"the request is too large for lclusterd at {self.server} "
                                         f"({details.removeprefix('SERVER: ')})")
        mapping = {
            "INVALID_ARGUMENT": errors.InvalidRequest,
            "NOT_FOUND": errors.NotFound,
            "FAILED_PRECONDITION": errors.NotPossible,
            "DEADLINE_EXCEEDED": errors.WaitTimeout,
            "RESOURCE_EXHAUSTED": errors.Unavailable,
        }
        cls = mapping.get(code)
        if cls is None:
            return errors.ServerError(f"lclusterd at {self.server} failed: {code}: {details}")
        return cls(details)

    def _refused(self, details: str) -> bool:
        """Whether an UNAVAILABLE the node did not send means it refused us rather than being
        away: a TLS listener closes the connection of a client without an acceptable
        certificate ("Socket closed"), which a node dying mid-call would say as well, so then
        the node is asked whether it speaks TLS."""
        if any(word in details for word in _REFUSAL_WORDS):
            return True
        if not any(word in details for word in _CLOSED_WORDS):
            return False
        if self.target.is_unix:  # the gate closes a uid that is not root and not in the group
            return os.getuid() != 0 and not _in_group(GROUP)
        return bool(self.target.tls_dir) or speaks_tls(self.server)

    def _refusal(self) -> str:
        if self.target.is_unix:
            return (f"lclusterd at {self.server} refused the connection: only root and members of the group "
                    "lclusterd may use a node's socket")
        if not self.target.tls_dir:
            return (f"lclusterd at {self.server} refused the connection: it serves mutual TLS; give -tls-dir DIR and "
                    f"-user NAME (or {TLS_DIR_ENV} and {USER_ENV})")
        return (f"lclusterd at {self.server} refused the TLS handshake: is the certificate of {self.target.user or 'you'} "
                f"signed by the cluster's CA in {self.target.tls_dir} and still valid, and {self.server.rsplit(':', 1)[0]} "
                "in the node's --host list?")
