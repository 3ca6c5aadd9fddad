"""Each lclusterd error class maps to one gRPC status code, here and only here.

The class name also travels as trailing metadata (`lclusterd-error`), so a client can tell
"etcd is unavailable behind the daemon" from "the daemon is unreachable" (both UNAVAILABLE).
"""

from __future__ import annotations

import functools
import logging

import grpc

from lclusterd.errors import (InvalidSpec, InvalidTransition, IsAPool, JobFinished, JobNotFound, JobRemoved, LclusterdError,
                              NodeNotFound, NoNodeHasImage, NodeUnreachable, NoReadyNode, NotAllowed, NotAuthenticated, NotRunning,
                              RuntimeUnavailable,
                              QuotaExceeded, StoreUnavailable, TooBusy, WaitTimedOut,
                              WebDisabled)
from lclusterd.rpc.metadata import ERROR_METADATA_KEY

log = logging.getLogger(__name__)

STATUS_OF = {
    InvalidSpec: grpc.StatusCode.INVALID_ARGUMENT,
    JobNotFound: grpc.StatusCode.NOT_FOUND,
    JobRemoved: grpc.StatusCode.NOT_FOUND,
    NodeNotFound: grpc.StatusCode.NOT_FOUND,
    NodeUnreachable: grpc.StatusCode.UNAVAILABLE,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    RuntimeUnavailable: grpc.StatusCode.UNAVAILABLE,
    TooBusy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    JobFinished: grpc.StatusCode.FAILED_PRECONDITION,
    NotRunning: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidTransition: grpc.StatusCode.FAILED_PRECONDITION,
    NoReadyNode: grpc.StatusCode.FAILED_PRECONDITION,
    NoNodeHasImage: grpc.StatusCode.FAILED_PRECONDITION,
    IsAPool: grpc.StatusCode.FAILED_PRECONDITION,
    WebDisabled: grpc.StatusCode.FAILED_PRECONDITION,
    WaitTimedOut: grpc.StatusCode.DEADLINE_EXCEEDED,
    NotAuthenticated: grpc.StatusCode.UNAUTHENTICATED,
    NotAllowed: grpc.StatusCode.PERMISSION_DENIED,
}


def status_of(error: LclusterdError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, exc: Exception):
    if isinstance(exc, LclusterdError):
        code, message, name = status_of(exc), str(exc), type(exc).__name__
    else:
        log.exception("internal error")
        code, message, name = grpc.StatusCode.INTERNAL, f"internal error in lclusterd: {type(exc).__name__}: {exc}", "Internal"
    context.set_trailing_metadata(((ERROR_METADATA_KEY, name),))
    context.abort(code, message)


def maps_errors(method):
    """Servicer decorator: a raised error becomes its status code and message."""

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error leaves as a status, never a traceback
            if _is_abort(exc):
                raise
            _abort(context, exc)

    return unary


def maps_stream_errors(method):
    @functools.wraps(method)
    def stream(self, request, context):
        try:
            yield from method(self, request, context)
        except Exception as exc:  # noqa: BLE001
            if _is_abort(exc):
                raise
            _abort(context, exc)

    return stream


def _is_abort(exc: Exception) -> bool:
    # context.abort raises a plain Exception subclass private to grpc; let it through
    return type(exc).__module__.startswith("grpc")
