"""SparePool: job inits spawned ahead of their jobs, so a job start only hands one its plan.

A spare is `lclusterd-jobinit` running its spare plan (plan.spare_plan): PID 1 of a new PID
namespace, with its mount, UTS, IPC and network namespaces, scratch tmpfs, loopback and,
with user namespaces, the job's user namespace ready; it waits on its socket (its fd 3)
for the job's plan. The pool spawns it with posix_spawn (vfork + exec: no copy of the
fork server's page tables) after unsharing CLONE_NEWPID, which applies to the next child
only, and returns to its own PID namespace with setns. Each spare holds its own slot of
user-namespace ids (userns.py) until its job ends.

The pool spawns them in a thread of its own, started by the first `refill`: posix_spawn
returns only once the child has exec'd, and on a busy node that wait (the child's exec into
its new PID namespace, and its turn on a core) was 0.5-1.3 ms a spare, a fifth to a quarter
of the fork server's loop, which every job passes through one at a time (README,
bench/arrays.py). The spawn goes through ctypes (kernel.posix_spawn), which lets go of the
GIL in that wait, so the loop goes on starting and finishing jobs meanwhile. unshare and
setns of CLONE_NEWPID act on the calling thread only, so the thread's spawns and one by the
loop itself (when no spare is waiting) never see each other's namespace. The thread lives as
long as the pool: a spare's parent-death signal follows the thread that spawned it (the
job's plan clears it before the job runs).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections import deque
from dataclasses import dataclass

from lclusterd.runtime import kernel, plan
from lclusterd.runtime.mounts import Scratch
from lclusterd.runtime.userns import Slot, Slots

log = logging.getLogger(__name__)

SPARES = 2  # one per core keeps two parallel streams off the spawn
# Reset in the init: an ignored signal survives exec, and the job gets a shell's defaults.
DEFAULT_SIGNALS = [s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP)]


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
        self._lock = threading.Lock()  # the waiting spares, shared by the loop and the pool's thread
        self._wanted = threading.Event()  # fewer than `size` wait: the thread spawns
        self._ended = False
        self._thread: threading.Thread | None = None
        self._last_error = ""  # the last reason a spare could not be spawned, logged once

    def take(self) -> SpareInit:
        """A waiting spare, or a new one when none waits (OSError if none can be spawned)."""
        with self._lock:
            spare = self._waiting.popleft() if self._waiting else None
        self._wanted.set()
        return spare if spare is not None else self.spawn()

    def spawn(self) -> SpareInit:
        setup = self.setup
        slot = setup.slots.acquire() if setup.slots is not None else None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [setup.jobinit, *plan.spare_plan(setup.scratch, setup.keep_caps, setup.cap_last, slot.ids if slot else None)]
        try:
            kernel.unshare(kernel.CLONE_NEWPID)
            try:
                pid = kernel.posix_spawn(setup.jobinit, argv, [(theirs.fileno(), 3)], DEFAULT_SIGNALS)
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
        """Have spares spawned until `size` wait, by the pool's thread (started by the first
        call). One that cannot be spawned (out of pids, say) is tried again when a spare is
        taken or dies, or a second later; jobs spawn on demand meanwhile."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._spawn_ahead, name="spares", daemon=True)
            self._thread.start()
        if len(self._waiting) < self.size:
            self._wanted.set()

    def _spawn_ahead(self) -> None:
        """The pool's thread: keeps `size` spares waiting until the pool ends."""
        while not self._ended:
            self._wanted.wait(1.0)
            self._wanted.clear()
            while not self._ended and len(self._waiting) < self.size and self._spawn_one():
                pass

    def _spawn_one(self) -> bool:
        try:
            spare = self.spawn()
        except OSError as error:
            reason = error.strerror or str(error)
            if reason != self._last_error:  # say it once, not every try
                self._last_error = reason
                log.warning("cannot spawn a spare job init: %s", reason)
            return False
        self._last_error = ""
        with self._lock:
            if not self._ended:
                self._waiting.append(spare)
                return True
        self._end(spare)  # the pool ended while it was spawned
        return False

    def reaped(self, pid: int) -> bool:
        """A waiting spare exited (it failed, or was killed): drop it. False if `pid` is none of ours."""
        with self._lock:
            found = [s for s in self._waiting if s.pid == pid]
            for spare in found:
                self._waiting.remove(spare)
        for spare in found:
            self.release(spare)
        self._wanted.set()
        return bool(found)

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
        """End the pool's thread and every waiting spare."""
        with self._lock:
            self._ended = True
            waiting, self._waiting = list(self._waiting), deque()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for spare in waiting:
            self._end(spare)

    def _end(self, spare: SpareInit) -> None:
        """Discard it and wait until it is gone, so it leaves no process in the node's cgroups."""
        self.discard(spare)
        try:
            os.waitpid(spare.pid, 0)
        except ChildProcessError:  # the loop's reaping got it first
            pass
