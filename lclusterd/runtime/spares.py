"""SparePool: job inits spawned ahead of their jobs, so a job start only hands one its plan.

A spare is `lclusterd-jobinit` running its spare plan (plan.spare_plan): PID 1 of a new PID
namespace, with its mount, UTS, IPC and network namespaces, scratch tmpfs, loopback and,
with user namespaces, the job's user namespace ready; it waits on its socket (its fd 3)
for the job's plan. The pool spawns it with posix_spawn (vfork + exec: no copy of the
fork server's page tables) after unsharing CLONE_NEWPID, which applies to the next child
only, and returns to its own PID namespace with setns. Each spare holds its own slot of
user-namespace ids (userns.py) until its job ends.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections import deque
from dataclasses import dataclass

from lclusterd.runtime import kernel, plan
from lclusterd.runtime.mounts import Scratch
from lclusterd.runtime.userns import Slot, Slots

log = logging.getLogger(__name__)

SPARES = 2  # one per core keeps two parallel streams off the spawn
# Reset in the init: an ignored signal survives exec, and the job gets a shell's defaults.
_DEFAULT_SIGNALS = [s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP)]


@dataclass
class SpareInit:
    """A spawned job init waiting for its job's plan on `sock`."""

    pid: int
    sock: socket.socket
    slot: Slot | None  # its user-namespace ids; None without user namespaces


@dataclass(frozen=True)
class SpareSetup:
    """What every spare is spawned with."""

    jobinit: str
    scratch: Scratch
    keep_caps: int
    cap_last: int
    own_pid_ns: int  # fd of the fork server's PID namespace, to return to after each spawn
    slots: Slots | None = None


class SparePool:
    def __init__(self, setup: SpareSetup, size: int = SPARES):
        self.setup = setup
        self.size = size
        self._waiting: deque[SpareInit] = deque()
        self._last_error = ""  # the last reason a spare could not be spawned, logged once

    def take(self) -> SpareInit:
        """A waiting spare, or a new one when none waits (OSError if none can be spawned)."""
        return self._waiting.popleft() if self._waiting else self.spawn()

    def spawn(self) -> SpareInit:
        setup = self.setup
        slot = setup.slots.acquire() if setup.slots is not None else None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [setup.jobinit, *plan.spare_plan(setup.scratch, setup.keep_caps, setup.cap_last, slot.ids if slot else None)]
        try:
            kernel.unshare(kernel.CLONE_NEWPID)
            try:
                pid = os.posix_spawn(setup.jobinit, argv, {}, file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)],
                                     setsigmask=(), setsigdef=_DEFAULT_SIGNALS)
            finally:  # later children go back to our own namespace
                kernel.setns(setup.own_pid_ns, kernel.CLONE_NEWPID)
        except BaseException:
            ours.close()
            if slot is not None:
                Slots.release(slot)
            raise
        finally:
            theirs.close()
        return SpareInit(pid, ours, slot)

    def refill(self) -> None:
        while len(self._waiting) < self.size:
            try:
                self._waiting.append(self.spawn())
                self._last_error = ""
            except OSError as error:  # e.g. out of pids: jobs spawn on demand instead
                reason = error.strerror or str(error)
                if reason != self._last_error:  # say it once, not every loop
                    self._last_error = reason
                    log.warning("cannot spawn a spare job init: %s", reason)
                return

    def reaped(self, pid: int) -> bool:
        """A waiting spare exited (it failed, or was killed): drop it. False if `pid` is none of ours."""
        for spare in [s for s in self._waiting if s.pid == pid]:
            self._waiting.remove(spare)
            self.release(spare)
            return True
        return False

    @staticmethod
    def release(spare: SpareInit) -> None:
        """Close the spare's socket (an idle spare exits then) and free its ids."""
        spare.sock.close()
        if spare.slot is not None:
            Slots.release(spare.slot)

    def discard(self, spare: SpareInit) -> None:
        self.release(spare)
        try:
            os.kill(spare.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def end_all(self) -> None:
        while self._waiting:
            spare = self._waiting.popleft()
            self.discard(spare)
            try:
                os.waitpid(spare.pid, 0)
            except ChildProcessError:
                pass
