"""Who may do what, given the caller's Identity (identity.py):

- a user sees (check, list, logs, wait) and kills only the jobs and pools they added;
- an admin sees and acts on all of them, and only an admin drains or undrains a node;
- a peer node (a node certificate) only reads logs on a user's behalf (the node it came
  through decided that user could); it adds, sees and kills nothing itself.

A job from before identities has no owner: only admins see it.
"""

from __future__ import annotations

from lclusterd.api.identity import Identity
from lclusterd.errors import NotAllowed


def check_may_add(caller: Identity) -> None:
    if caller.node:
        raise NotAllowed(f"{caller.label} may not add jobs: node certificates only read logs for other nodes")


def check_may_act(caller: Identity, owner: str, what: str, job_id: str) -> None:
    """NotAllowed unless `caller` may `what` (see, kill, ...) the job or pool `job_id` of `owner`."""
    if caller.admin or (owner and owner == caller.name and not caller.node):
        return
    whose = f"{owner}'s" if owner else "an admin's"
    raise NotAllowed(f"{caller.label} may not {what} {job_id}: it is {whose} job, and users {what} only their own")


def check_may_proxy(caller: Identity) -> None:
    """A call marked as proxied by a node is answered from this node's files without a
    further check: only a node (or an admin) may make one."""
    if not (caller.node or caller.admin):
        raise NotAllowed(f"{caller.label} may not make a call marked as coming from another node")


def check_admin(caller: Identity, what: str) -> None:
    if not caller.admin:
        raise NotAllowed(f"{caller.label} may not {what}: only admins may")


def check_may_use_web(caller: Identity) -> None:
    if caller.node:
        raise NotAllowed(f"{caller.label} may not log in to the web page: node certificates only read logs for other nodes")


def owner_filter(caller: Identity) -> str | None:
    """Whose jobs `caller` lists: None (everyone's) for an admin, else their own."""
    if caller.node:
        raise NotAllowed(f"{caller.label} may not list jobs: node certificates only read logs for other nodes")
    return None if caller.admin else caller.name
