"""Peers: calls this node makes to other nodes on a client's behalf (reading the logs of a job
that ran elsewhere, running a command in a job that runs elsewhere), so a client can ask any
node about any job.

A proxied call carries PROXIED_KEY, and a node answers a proxied call from its own files only,
so a request is forwarded at most once and can never loop between nodes.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator

import grpc

from lclusterd.cluster import decode
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.store import Store
from lclusterd.errors import NodeUnreachable, RecordError
from lclusterd.rpc import lclusterd_pb2 as pb
from lclusterd.rpc import lclusterd_pb2_grpc as pb_grpc
from lclusterd.rpc.metadata import CALL_TIMEOUT, ERROR_METADATA_KEY, PROXIED_KEY



class Peers:
    def __init__(self, store: Store, keys: Keys, me: str,
                 credentials: Callable[[], grpc.ChannelCredentials] | None = None):
        """credentials: gives this node's certificate for its peers (--tls-dir), a new object
        once the certificate was read again; None: plain TCP."""
        self.store = store
        self.keys = keys
        self.me = me
        self._credentials = credentials
        self._lock = threading.Lock()
        self._stubs: dict[str, tuple[grpc.Channel, pb_grpc.JobsStub]] = {}
        self._made_with: grpc.ChannelCredentials | None = None  # the credentials of the channels in _stubs
        self._retired: list[grpc.Channel] = []  # made with earlier credentials; calls may still use them

    def _stub(self, node: str) -> tuple[pb_grpc.JobsStub, str]:
        live = self.store.get(self.keys.node(node))
        if live is None:
            raise NodeUnreachable(f"the job ran on node {node}, which is gone (its lease expired); "
                                  "its logs stay on that node until it is back")
        try:
            address = decode.node(live.key, live.value, live.mod_revision).address
        except RecordError as error:
            raise NodeUnreachable(f"the job ran on node {node}, whose registration in etcd is malformed ({error})") from None
        if not address:
            raise NodeUnreachable(f"the job ran on node {node}, which serves no TCP (start it with --tls-dir to "
                                  "read its jobs' logs through other nodes); ask that node on its own socket")
        credentials = self._credentials() if self._credentials is not None else None
        with self._lock:
            if credentials is not self._made_with:  # reloaded: new connections present the new certificate
                self._retired += [channel for channel, _ in self._stubs.values()]
                self._stubs.clear()
                self._made_with = credentials
            if address not in self._stubs:
                options = [("grpc.enable_http_proxy", 0)]
                channel = (grpc.secure_channel(address, credentials, options) if credentials is not None
                           else grpc.insecure_channel(address, options))
                self._stubs[address] = (channel, pb_grpc.JobsStub(channel))
            return self._stubs[address][1], address

    def logs(self, node: str, request: pb.LogsRequest, context: grpc.ServicerContext) -> Iterator[pb.LogChunk]:
        """Stream the job's logs from `node`, passing its errors through with their status."""
        return self._forward(node, "Logs", request, context, None if request.follow else CALL_TIMEOUT)

    def exec(self, node: str, request: pb.ExecRequest, context: grpc.ServicerContext) -> Iterator[pb.ExecChunk]:
        """Run the command in the job on `node`, streaming its output and end from there."""
        return self._forward(node, "Exec", request, context, None)

    def _forward(self, node: str, method: str, request, context: grpc.ServicerContext, timeout: float | None) -> Iterator:
        stub, address = self._stub(node)
        call = getattr(stub, method)(request, metadata=((PROXIED_KEY, self.me),), timeout=timeout)
        context.add_callback(call.cancel)  # the client went away: stop the upstream call too
        try:
            yield from call
        except grpc.RpcError as exc:
            theirs = any(k == ERROR_METADATA_KEY for k, _ in (exc.trailing_metadata() or ()))
            if theirs:  # the owning node's own answer (not found, unavailable etcd...): pass it on
                context.set_trailing_metadata(exc.trailing_metadata())
                context.abort(exc.code(), exc.details())
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise NodeUnreachable(f"the job ran on node {node} at {address}, which cannot be reached "
                                  f"({exc.code().name})") from None

    def close(self) -> None:
        with self._lock:
            for channel in self._retired + [channel for channel, _ in self._stubs.values()]:
                channel.close()
            self._stubs.clear()
            self._retired.clear()
