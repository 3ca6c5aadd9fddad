"""The web page's calls: the API's own, for a caller the page knows from their token.

Each call goes through the cluster layer's services the gRPC servicer is given (ApiServices)
and the same checks (api/access.py) in the same order, and answers the API's messages (pb.Job,
pb.Node, made by api/convert.py), so the page and the JSON under /api/ see exactly what
lclient sees: a user their own jobs, an admin all of them. Errors are the lclusterd errors
the servicer raises; web/errors.py maps them to HTTP statuses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lclusterd.api import access
from lclusterd.api.convert import job_to_proto, node_to_proto, pool_to_proto
from lclusterd.api.identity import Identity
from lclusterd.api.servicer import ApiServices
from lclusterd.cluster.lookup import FoundJob, FoundPool
from lclusterd.errors import InvalidSpec, IsAPool, NotAllowed
from lclusterd.model import STATES, JobRecord, JobSpec, parse_job_id
from lclusterd.rpc import lclusterd_pb2 as pb

MAX_LIST = 1000  # most jobs one page or /api/jobs answers with
MAX_READ = 256 * 1024  # most bytes of each stream one logs answer carries; the next carries on


@dataclass
class Output:
    """What a job wrote past the offsets asked for: bytes per stream, where each ends, whether
    there is more to read already, and the job's state when the reading began (once that is
    terminal and nothing more is left, this is all it wrote)."""

    stdout: bytes
    stderr: bytes
    offsets: tuple[int, int]
    more: bool
    state: str = ""


class WebCalls:
    def __init__(self, services: ApiServices):
        self.s = services
        self.pools = services.lookup.pools

    def nodes(self, caller: Identity) -> list[pb.Node]:
        return [node_to_proto(view) for view in self.s.nodes.list()]

    def jobs(self, caller: Identity, states: list[str], owner: str, limit: int) -> list[pb.Job]:
        """Jobs newest first, in `states` (all when empty) and of `owner` (anyone's when
        empty: for a user, their own); NotAllowed when a user asks for another's."""
        mine = access.owner_filter(caller)
        if owner and mine is not None and owner != mine:
            raise NotAllowed(f"{caller.label} may not list {owner}'s jobs: users see only their own")
        wanted = {s.upper() for s in states if s}
        unknown = sorted(wanted - set(STATES))
        if unknown:
            raise InvalidSpec(f"unknown state {unknown[0]!r}: expected one of {', '.join(STATES)}")
        if not 0 < limit <= MAX_LIST:
            raise InvalidSpec(f"limit must be between 1 and {MAX_LIST}, not {limit}")
        records = self.s.jobs.list(wanted or None, limit, owner or mine)
        return [job_to_proto(r) for r in reversed(records)]

    def job(self, caller: Identity, job_id: str) -> pb.Job:
        """The job or pool, as Check answers it."""
        return self.s.as_checked(self._resolve(caller, job_id, "see"))

    def kill(self, caller: Identity, job_id: str) -> pb.Job:
        found = self._resolve(caller, job_id, "kill")
        if isinstance(found, FoundPool):
            return pool_to_proto(found.pool, self.pools.kill(found.pool))
        return job_to_proto(self.s.jobs.kill(found.record.id))

    def add(self, caller: Identity, spec: JobSpec, all_nodes: bool) -> pb.Job:
        access.check_may_add(caller)  # admission checks the spec itself
        if all_nodes:
            pool, members = self.s.admission.add_pool(spec, caller.name, caller.admin)
            return pool_to_proto(pool, members)
        return job_to_proto(self.s.admission.add(spec, caller.name, caller.admin))

    def output(self, caller: Identity, job_id: str, offsets: tuple[int, int]) -> Output:
        """What the job wrote past `offsets` (at most MAX_READ of each stream), read here or,
        for a job that ran on another node, from that node (api/peers.py)."""
        found = self._resolve(caller, job_id, "see")
        if isinstance(found, FoundPool):
            raise IsAPool(found.pool.id, len(found.pool.members), "read a member's logs (its page lists them)")
        record = found.record
        if record.node and record.node != self.s.node:
            output = self._remote_output(record, offsets)
        else:
            read, taken = list(offsets), [bytearray(), bytearray()]
            for stream, data in self.s.logs.read_new(record.id, read):
                taken[stream] += data
                if len(taken[stream]) >= MAX_READ:
                    break
            output = _cut(taken, offsets)
        output.state = record.state
        return output

    def _remote_output(self, record: JobRecord, offsets: tuple[int, int]) -> Output:
        """The Logs call of the peer that ran the job, read whole (it takes no offsets) and cut."""
        context = _PeerContext()
        taken = [bytearray(), bytearray()]
        for chunk in self.s.peers.logs(record.node, pb.LogsRequest(id=record.id), context):
            taken[0 if chunk.stream == pb.LogChunk.STDOUT else 1] += chunk.data
        return _cut([bytearray(b[o:]) for b, o in zip(taken, offsets)], offsets)

    def _resolve(self, caller: Identity, job_id: str, what: str) -> FoundJob | FoundPool:
        job_id = parse_job_id(job_id)
        found = self.s.lookup.resolve(job_id)
        owner = found.pool.owner if isinstance(found, FoundPool) else found.record.owner
        access.check_may_act(caller, owner, what, job_id)
        return found


def _cut(taken: list[bytearray], offsets: tuple[int, int]) -> Output:
    """At most MAX_READ of each stream, ending on a whole UTF-8 character where the text allows
    (the page shows text; a character cut in two would show as two replacement marks)."""
    kept = [_whole_characters(bytes(b[:MAX_READ])) for b in taken]
    more = any(len(b) >= MAX_READ for b in taken)
    return Output(kept[0], kept[1], (offsets[0] + len(kept[0]), offsets[1] + len(kept[1])), more)


def _whole_characters(data: bytes) -> bytes:
    """`data` less an incomplete UTF-8 sequence at its end (at most 3 bytes)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the last sequence's lead byte (or plain ASCII)
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
            return data if need <= back else data[:-back]
    return data


class _PeerContext:
    """The little of a gRPC servicer context Peers.logs uses, for a call the web makes: a
    peer's own error comes back as the lclusterd error it stands for."""

    def __init__(self):
        self._callbacks: list = []
        self._lock = threading.Lock()

    def add_callback(self, callback) -> bool:
        with self._lock:
            self._callbacks.append(callback)
        return True

    def set_trailing_metadata(self, _metadata) -> None:
        pass

    def abort(self, code, details: str):
        raise PeerRefused(code.name, details)


class PeerRefused(Exception):
    """The node that ran the job answered a log read with an error (its status code name)."""

    def __init__(self, code: str, details: str):
        super().__init__(details)
        self.code = code
