"""JobsClient: one channel to an lclusterd node, a deadline per call, and every grpc.RpcError
turned into one of lclient.errors (with the sentence the daemon sent)."""

from __future__ import annotations

import os
from typing import Iterator

import grpc

from lclient import errors
from lclusterd.rpc import lclusterd_pb2 as pb
from lclusterd.rpc import lclusterd_pb2_grpc as pb_grpc
from lclusterd.rpc.metadata import CALL_TIMEOUT, ERROR_METADATA_KEY

DEFAULT_SERVER = "127.0.0.1:64051"
SERVER_ENV = "LCLUSTER_SERVER"


def default_server() -> str:
    return os.environ.get(SERVER_ENV) or DEFAULT_SERVER


class JobsClient:
    def __init__(self, server: str | None = None, timeout: float = CALL_TIMEOUT):
        self.server = server or default_server()
        self.timeout = timeout
        target = self.server
        for scheme in ("http://", "grpc://"):
            if target.startswith(scheme):
                target = target[len(scheme):]
        self._channel = grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
        self._stub = pb_grpc.JobsStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------
    def add(self, spec: pb.JobSpec, all_nodes: bool = False) -> pb.AddReply:
        """Queue a job; with all_nodes, a pool (one member per ready node): the reply's id is the pool's."""
        return self._call(self._stub.Add, pb.AddRequest(spec=spec, all_nodes=all_nodes))

    def check(self, job_id: str) -> pb.Job:
        """The job, or for a pool id the pool (is_pool set, every member in `members`)."""
        return self._call(self._stub.Check, pb.JobRef(id=job_id))

    def kill(self, job_id: str) -> pb.Job:
        return self._call(self._stub.Kill, pb.JobRef(id=job_id))

    def list(self, states: list[str] | None = None, limit: int = 0) -> list[pb.Job]:
        return list(self._call(self._stub.List, pb.ListRequest(states=states or [], limit=limit)).jobs)

    def nodes(self) -> list[pb.Node]:
        return list(self._call(self._stub.Nodes, pb.NodesRequest()).nodes)

    def drain(self, node: str, drain: bool = True) -> pb.Node:
        return self._call(self._stub.Drain, pb.DrainRequest(node=node, drain=drain))

    def logs(self, job_id: str, follow: bool = False) -> Iterator[pb.LogChunk]:
        stream = self._stub.Logs(pb.LogsRequest(id=job_id, follow=follow), timeout=None if follow else self.timeout)
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise self._translate(exc) from None
        finally:
            stream.cancel()

    def wait(self, job_id: str, timeout: float | None = None) -> pb.Job:
        deadline = None if timeout is None else timeout + self.timeout
        return self._call(self._stub.Wait, pb.WaitRequest(id=job_id, timeout_seconds=timeout or 0), deadline)

    # -- errors ------------------------------------------------------------------------------
    def _call(self, method, request, timeout: float | None | str = "default"):
        try:
            return method(request, timeout=self.timeout if timeout == "default" else timeout)
        except grpc.RpcError as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: grpc.RpcError) -> errors.ClientError:
        code, details = exc.code(), exc.details() or ""
        ours = any(k == ERROR_METADATA_KEY for k, _ in (exc.trailing_metadata() or ()))
        if code == grpc.StatusCode.UNAVAILABLE and not ours:
            return errors.ServerUnreachable(
                f"cannot reach lclusterd at {self.server} (is it running? choose another with -server or {SERVER_ENV})")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and not ours:
            return errors.ServerUnreachable(f"lclusterd at {self.server} did not answer within {self.timeout:g}s")
        if code == grpc.StatusCode.UNAVAILABLE:
            return errors.Unavailable(f"lclusterd at {self.server} cannot serve the request: {details}")
        mapping = {
            grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidRequest,
            grpc.StatusCode.NOT_FOUND: errors.NotFound,
            grpc.StatusCode.FAILED_PRECONDITION: errors.NotPossible,
            grpc.StatusCode.DEADLINE_EXCEEDED: errors.WaitTimeout,
            grpc.StatusCode.RESOURCE_EXHAUSTED: errors.Unavailable,
        }
        cls = mapping.get(code)
        if cls is None:
            return errors.ServerError(f"lclusterd at {self.server} failed: {code.name}: {details}")
        return cls(details)
