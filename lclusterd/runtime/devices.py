"""The devices a job may use, as data. Pure.

NODES are the device nodes a job's /dev gets (mounts.py makes them). ALLOWED is what the
kernel lets a job's processes open or mknod: those nodes, plus the pseudo-terminal
master (ptmx, which each job's own devpts instance provides) and its slaves. Everything
else, every block device included, is refused. The cgroup v1 driver writes ALLOWED as
devices.allow lines under a deny-all; the v2 driver attaches a BPF program built from
it (cgroups/device_filter.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

CHAR = "c"
BLOCK = "b"
ACCESS_ALL = "rwm"  # read, write, mknod


class DeviceNode(NamedTuple):
    """A character device node made in every job's /dev."""

    name: str
    major: int
    minor: int


NODES = (
    DeviceNode("null", 1, 3),
    DeviceNode("zero", 1, 5),
    DeviceNode("full", 1, 7),
    DeviceNode("random", 1, 8),
    DeviceNode("urandom", 1, 9),
    DeviceNode("tty", 5, 0),
)
PTMX = DeviceNode("ptmx", 5, 2)
PTS_MAJOR = 136  # the first major of the Unix98 pty slaves (/dev/pts/N)


@dataclass(frozen=True)
class DeviceRule:
    """Access a job is granted to devices of one type and number; None is "any"."""

    kind: str  # CHAR or BLOCK
    major: int | None
    minor: int | None
    access: str = ACCESS_ALL

    def v1_line(self) -> str:
        """The rule as the v1 devices controller reads it: `c 136:* rwm`."""
        major = "*" if self.major is None else self.major
        minor = "*" if self.minor is None else self.minor
        return f"{self.kind} {major}:{minor} {self.access}"

    def allows(self, kind: str, major: int, minor: int, access: str) -> bool:
        """Whether this rule grants every letter of `access` on the device."""
        return (kind == self.kind and self.major in (None, major) and self.minor in (None, minor)
                and set(access) <= set(self.access))


ALLOWED = (
    *(DeviceRule(CHAR, node.major, node.minor) for node in NODES),
    DeviceRule(CHAR, PTMX.major, PTMX.minor),
    DeviceRule(CHAR, PTS_MAJOR, None),
)
