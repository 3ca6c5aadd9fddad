"""Whether a rootfs is in use: a running job holds a shared flock on its rootfs directory
from before its spare is handed the plan until the fork server has reaped it (its mount
namespace, and the overlay whose lower layer that directory is, are gone by then), and
`lclusterd image rm` or `import --replace` take the lock exclusively, without waiting, for
as long as they remove the old tree. So an image is never pulled from under a running
job: the removal is refused while one runs, and a job that starts while its image is
being removed fails at once, before it has a process.

flock, not a count in a file: the kernel drops a lock with the last descriptor, so nothing
stale is left when the fork server dies (its jobs may outlive it; until it starts again
the image is not protected, docs/container.md says so). The lock is on the directory's
inode, so it follows the tree through the store's renames.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Iterator

from lclusterd.errors import ImageInUse, SetupFailed

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def hold(rootfs: str) -> int:
    """A descriptor holding `rootfs` as in use (close it when the job has ended). SetupFailed
    when it is not there, or is an image being removed."""
    try:
        fd = os.open(rootfs, _DIRECTORY)
    except FileNotFoundError:
        raise SetupFailed("rootfs", f"rootfs {rootfs} does not exist (build it with `make rootfs`)") from None
    except OSError as error:
        raise SetupFailed("rootfs", f"rootfs {rootfs}: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SetupFailed("rootfs", f"the image at {rootfs} is being removed from this node") from None
    return fd


@contextlib.contextmanager
def holding(rootfs: str) -> Iterator[int]:
    """hold(rootfs) for a block that hands the descriptor on: closed if the block fails."""
    fd = hold(rootfs)
    try:
        yield fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def unused(name: str, rootfs: str) -> Iterator[None]:
    """Hold image `name`'s `rootfs` exclusively for the block: ImageInUse when a job runs on it.
    A rootfs that is not there (an import that crashed half way) is nobody's: nothing to hold."""
    try:
        fd = os.open(rootfs, _DIRECTORY)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            yield
            return
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ImageInUse(name) from None
        yield
    finally:
        os.close(fd)
