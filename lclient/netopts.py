"""-net, -publish, -volume, -workdir and -run-as of `lclient -add`, checked with the daemon's
own checks (lclusterd.limits) so that a malformed value is refused before any call. Imported
only by an -add that uses one of them."""

from __future__ import annotations

from typing import Callable

from lclient import errors
from lclusterd import limits
from lclusterd.errors import InvalidSpec
from lclusterd.rpc import lclusterd_pb2 as pb


def network_and_volumes(spec: pb.JobSpec, net: str | None, publish: tuple[str, ...], volumes: tuple[str, ...],
                        workdir: str | None, run_as: str | None, utf8: Callable[[str, str], str]) -> None:
    """The options into `spec`; errors.InvalidRequest (exit 2) with the daemon's sentence otherwise."""
    spec.net = utf8("the -net value", net or "none")
    spec.publish.extend(utf8("a -publish value", entry) for entry in publish)
    spec.volumes.extend(utf8("a -volume value", entry) for entry in volumes)
    spec.workdir = utf8("the -workdir value", workdir or "")
    spec.run_as = utf8("the -run-as value", run_as or "")
    try:
        limits.check_network(spec.net, list(spec.publish))
        limits.check_volumes(list(spec.volumes))
        limits.check_workdir(spec.workdir)
        limits.parse_user(spec.run_as)
    except InvalidSpec as exc:
        raise errors.InvalidRequest(str(exc)) from None
