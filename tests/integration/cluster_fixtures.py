"""Only for bench/cluster.py and bench/scale.py, which import these three names from here (with
tests/integration on sys.path). The tests' helpers live in support/ (support/__init__.py says
which module holds what); once bench/ imports them from support.processes, delete this file.
`Daemon` is support.processes.NodeProcess under its old name."""

from support.host import remove_cgroup_parent
from support.processes import EtcdProcess
from support.processes import NodeProcess as Daemon

__all__ = ["Daemon", "EtcdProcess", "remove_cgroup_parent"]
