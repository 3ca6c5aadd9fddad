"""Each lclusterd error class maps to one HTTP status, here and only here: the web page's twin
of api/errors.py (whose gRPC codes they mirror: INVALID_ARGUMENT 400, UNAUTHENTICATED 401,
PERMISSION_DENIED 403, NOT_FOUND 404, FAILED_PRECONDITION 409, UNAVAILABLE 503)."""

from __future__ import annotations

from lclusterd.errors import (InvalidSpec, InvalidTransition, IsAPool, JobFinished, JobNotFound, LclusterdError, NodeNotFound,
                              NodeUnreachable, NoNodeHasImage, NoReadyNode, NotAllowed, NotAuthenticated, RuntimeUnavailable,
                              QuotaExceeded, StoreUnavailable, TooBusy, WebDisabled)
from lclusterd.web.calls import PeerRefused

STATUS_OF = {
    InvalidSpec: 400,
    NotAuthenticated: 401,
    NotAllowed: 403,
    JobNotFound: 404,  # and JobRemoved, its subclass
    NodeNotFound: 404,
    JobFinished: 409,
    InvalidTransition: 409,
    NoReadyNode: 409,
    NoNodeHasImage: 409,
    IsAPool: 409,
    WebDisabled: 409,
    StoreUnavailable: 503,
    NodeUnreachable: 503,
    RuntimeUnavailable: 503,
    TooBusy: 503,
    QuotaExceeded: 429,
}
# a peer node's answer to a proxied log read, by its gRPC status code's name
STATUS_OF_CODE = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
                  "FAILED_PRECONDITION": 409, "UNAVAILABLE": 503, "RESOURCE_EXHAUSTED": 503}


def status_of(error: Exception) -> int:
    """The HTTP status for an error a call raised; 500 for anything else (a bug)."""
    if isinstance(error, PeerRefused):
        return STATUS_OF_CODE.get(error.code, 500)
    if isinstance(error, LclusterdError):
        for cls in type(error).__mro__:
            if cls in STATUS_OF:
                return STATUS_OF[cls]
    return 500
