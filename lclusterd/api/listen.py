"""The node's gRPC server, bound before the node touches etcd (so a port in use fails first):
the socket gate's private Unix socket always, and the node's TCP address with mutual TLS
(`--tls-dir`) or plain (`--insecure`); health checking and reflection are served on it, the
Jobs service is added once the node has joined its cluster."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lclusterd.api.slots import MAX_BLOCKING
from lclusterd.errors import LclusterdError
from lclusterd.rpc import lclusterd_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Jobs"].full_name


class ListenError(LclusterdError):
    """The server cannot listen where it was asked to; one line for the operator."""


def bind_server(tcp: str | None, tls: grpc.ServerCredentials | None,
                private_socket: str) -> tuple[grpc.Server, health.HealthServicer]:
    """A server listening on `tcp` (HOST:PORT; with `tls`, mutual TLS, else plain; None: no
    TCP) and on the Unix socket `private_socket`, in a 0700 directory: only root reaches the
    API without the gate. ListenError if it cannot bind."""
    # MAX_BLOCKING of these threads may sit in Wait/Logs(follow); the rest serve the quick calls
    server = grpc.server(ThreadPoolExecutor(max_workers=MAX_BLOCKING + 64, thread_name_prefix="grpc"),
                         options=[("grpc.so_reuseport", 0)])
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if tcp is not None:
        try:
            server.add_secure_port(tcp, tls) if tls is not None else server.add_insecure_port(tcp)
        except RuntimeError:
            raise ListenError(f"cannot listen on {tcp}: the port is in use or the address is not on this host "
                              "(is another lclusterd running? pick another with --listen)") from None
    private = Path(private_socket)
    private.parent.mkdir(mode=0o700, exist_ok=True)
    os.chmod(private.parent, 0o700)
    private.unlink(missing_ok=True)
    try:
        server.add_insecure_port(f"unix:{private}")
    except RuntimeError:
        raise ListenError(f"cannot listen on unix:{private}") from None
    return server, health_servicer
