"""The one tree of lclusterd errors. Pure: imports neither grpc nor etcd3.

Each error carries a sentence a user can act on (its str) plus structured fields.
The API layer maps each class to one gRPC status code, once.
"""

from __future__ import annotations

import time


class LclusterdError(Exception):
    """Base of every error lclusterd raises on purpose."""


class InvalidSpec(LclusterdError):
    """A job spec or request argument is malformed or out of range."""


class JobNotFound(LclusterdError):
    """No job has the given id."""

    def __init__(self, job_id: str):
        super().__init__(f"no job with uuid {job_id}")
        self.job_id = job_id


class MalformedRecord(JobNotFound):
    """The id's record in etcd is not one lclusterd wrote (records.py says what is wrong with it):
    it is ignored, as if there were none, and said so."""

    def __init__(self, job_id: str, reason: str, kind: str = "job"):
        LclusterdError.__init__(self, f"{kind} {job_id} has a malformed record in etcd, which lclusterd ignores ({reason})")
        self.job_id = job_id
        self.reason = reason


class JobRemoved(JobNotFound):
    """The job (or pool) ended longer ago than the retention period, and its record was removed."""

    def __init__(self, job_id: str, finished_at: float, removed_at: float, keep: str, kind: str = "job"):
        LclusterdError.__init__(self, f"{kind} {job_id} was removed by retention at {_when(removed_at)} (it ended at "
                                      f"{_when(finished_at)}; ended jobs are kept for {keep}, --keep)")
        self.job_id = job_id
        self.finished_at = finished_at
        self.removed_at = removed_at


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


class NotRunning(LclusterdError):
    """The job is not running (queued, starting or ended): a command cannot be run in it."""


class JobFinished(LclusterdError):
    """The job (or every member of the pool) is already in a terminal state, so it cannot be killed."""

    def __init__(self, job_id: str, state: str, kind: str = "job"):
        super().__init__(f"{kind} {job_id} has already finished ({state})")
        self.job_id = job_id
        self.state = state


class StoreUnavailable(LclusterdError):
    """etcd cannot be reached or did not answer in time."""


class RecordError(LclusterdError):
    """A record read from etcd (a job, pool or node) is not one lclusterd wrote: not JSON, a
    field missing or of the wrong type or out of range, or an id that is not its key's
    (records.py). Readers skip it; a request for that one id gets MalformedRecord."""


class InvalidTransition(LclusterdError):
    """A job state change that the state machine does not allow."""

    def __init__(self, current: str, target: str):
        super().__init__(f"cannot go from {current} to {target}")
        self.current = current
        self.target = target


class SetupFailed(LclusterdError):
    """A container set-up step failed before the job's command was executed."""

    def __init__(self, step: str, detail: str, errno: int = 0):
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail
        self.errno = errno


class RuntimeUnavailable(LclusterdError):
    """The runtime helper (fork server) is not running or stopped answering."""


class WaitTimedOut(LclusterdError):
    """A wait for a job ended before the job did."""

    def __init__(self, job_id: str, state: str, seconds: float, kind: str = "job"):
        super().__init__(f"{kind} {job_id} is still {state} after {seconds:g}s")
        self.job_id = job_id
        self.state = state
        self.seconds = seconds


class TooBusy(LclusterdError):
    """The node already serves as many blocking requests (wait, follow) as it allows."""


class QuotaExceeded(LclusterdError):
    """The owner already has as many jobs stored as a node admits for one user (--max-jobs-per-user)."""


class NodeNotFound(LclusterdError):
    """No node of that name has ever registered."""

    def __init__(self, name: str):
        super().__init__(f"no node named {name!r} has registered")
        self.name = name


class NodeUnreachable(LclusterdError):
    """The request needs another node (the one that ran the job) and it cannot be reached."""


class NoReadyNode(LclusterdError):
    """A pool (-all-nodes) was asked for while no node is ready (registered and not draining)."""


class IsAPool(LclusterdError):
    """The request is for one job, and the id names an -all-nodes pool (e.g. its logs)."""

    def __init__(self, pool_id: str, members: int, what: str, kind: str = "pool"):
        shape = ", one per node" if kind == "pool" else ""
        super().__init__(f"{pool_id} is {'an' if kind == 'array' else 'a'} {kind} of {members} job(s){shape}; {what}")
        self.pool_id = pool_id


class WebDisabled(LclusterdError):
    """A web login was asked of a node that serves no web page (--web-listen empty)."""


class NotAuthenticated(LclusterdError):
    """The caller could not be identified (no identity the node accepts)."""


class NotAllowed(LclusterdError):
    """The caller is known, and the request is not theirs to make (another user's job, an
    admin-only action)."""


class ImageError(LclusterdError):
    """An image of a node's store cannot be imported, found or removed."""


class InvalidImageName(ImageError):
    """An image name that the store cannot hold (it becomes a directory name)."""


class InvalidImage(ImageError):
    """What was given to import is missing, is not an image, is malformed (manifest, config,
    digests), or has a layer that breaks a rule (a path that would leave the image)."""


class ImageNotFound(ImageError):
    """No image of that name is in this node's store."""

    def __init__(self, name: str):
        super().__init__(f"no image named {name!r} on this node (lclusterd image ls lists them)")
        self.name = name


class ImageInUse(ImageError):
    """A job running on this node has the image as its root: it is not removed or replaced under it."""

    def __init__(self, name: str):
        super().__init__(f"image {name!r} is in use by a job running on this node: remove or replace it once "
                         "its jobs have ended")


class ImageExists(ImageError):
    """The name is taken: by an image in the store (--replace replaces it) or by the node's rootfs."""


class NoNodeHasImage(LclusterdError):
    """A job names an image that no registered node (or not the node it is pinned to) has:
    refused at add rather than queued for a node that may never come."""

    def __init__(self, image: str, pinned: str = ""):
        where = f"node {pinned} does not have" if pinned else "no node has"
        super().__init__(f"{where} the image {image!r} (lclusterd image import {image} PATH on a node)")
        self.image = image
        self.pinned = pinned
