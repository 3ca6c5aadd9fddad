"""The job init's plans (plan.py), pure: the set-up steps come in the order the container's
security rests on (youki's "order of the set-up calls" test, on data instead of a recording
fake), every op is one jobinit.c knows with the arguments it expects, and the wire format."""

from __future__ import annotations

import errno
import re
import socket
import struct
from pathlib import Path

import pytest

from lclusterd.runtime import caps, kernel, plan
from lclusterd.runtime.mounts import Scratch
from lclusterd.runtime.users import Credentials
from lclusterd.runtime.userns import IdMap

SCRATCH = Scratch("/scratch")
IDS = IdMap(1_000_065_536, 1_000_065_536)
JOBINIT_DIR = Path(plan.__file__).parent / "jobinit"  # the C job init's sources


def job(**changes) -> plan.PreparedJob:
    fields = dict(job_id="j" * 32, argv=["/bin/sh", "-c", "echo hi"], env={"PATH": "/usr/bin:/bin", "A": "b c"},
                  cwd="/tmp", hostname="h1", rootfs="/rootfs", cgroup_procs=["/cg/mem/cgroup.procs", "/cg/pids/cgroup.procs"],
                  keep_caps=caps.mask_of(caps.DEFAULT_KEEP))
    fields.update(changes)
    return plan.PreparedJob(**fields)


def args_of(tokens: list[str], op: str) -> list[list[str]]:
    return [args for name, args in plan.ops(tokens) if name == op]


def names(tokens: list[str]) -> list[str]:
    return [name for name, _ in plan.ops(tokens) if name not in ("step", "umask")]


@pytest.mark.parametrize("ids", [None, IDS], ids=["no-userns", "userns"])
def test_job_steps_run_in_the_order_that_keeps_it_contained(ids):
    order = names(plan.job_plan(job(ids=ids, writable_bytes=1 << 20), SCRATCH))
    # cgroup join before any namespace or mount; the cgroup namespace right after the join
    assert order[:4] == ["pdeathsig", "cgroup", "cgroup", "unshare"]
    first_mount, pivot = order.index("mount"), order.index("pivot")
    assert order.index("stdio") < first_mount < pivot < order.index("mask") < order.index("readonly")
    # pivot_root before no_new_privs before the capability drop before exec, exec last
    assert pivot < order.index("hostname") < order.index("nnp") < order.index("capset") < order.index("seccomp") < order.index("exec")
    assert order[-1] == "exec"
    if ids is not None:
        # every mount (and the hostname) as the host's root, then into the user namespace,
        # whose entry resets the bounding set: dropped again before no_new_privs and capset
        assert order.index("idmap") < order.index("pivot") and order.index("hostname") < order.index("setuser")
        assert order.index("setuser") < order.index("bounding") < order.index("nnp")
    else:
        assert "setuser" not in order and "bounding" not in order and "idmap" not in order


def test_job_plan_arguments():
    tokens = plan.job_plan(job(), SCRATCH)
    ops = dict((name, args) for name, args in plan.ops(tokens) if name in ("unshare", "capset", "pivot", "hostname", "exec"))
    assert int(ops["unshare"][0], 16) == kernel.CLONE_NEWCGROUP
    assert int(ops["capset"][0], 16) == caps.mask_of(caps.DEFAULT_KEEP)
    assert ops["pivot"] == ["/scratch/root"]
    assert ops["hostname"] == ["h1"]
    assert ops["exec"] == ["/tmp", "/usr/bin:/bin", "3", "/bin/sh", "-c", "echo hi", "2", "PATH=/usr/bin:/bin", "A=b c"]
    overlay = next(args for args in args_of(tokens, "mount") if args[2] == "overlay")
    assert overlay == ["overlay", "/scratch/root", "overlay", str(kernel.MS_NOSUID | kernel.MS_NODEV),
                       "lowerdir=/rootfs,upperdir=/scratch/upper,workdir=/scratch/work"]
    steps = [args[0] for args in args_of(tokens, "step")]
    assert steps[:4] == ["start", "join cgroup", "unshare cgroup namespace", "stdio"]


@pytest.mark.parametrize("ids", [None, IDS], ids=["no-userns", "userns"])
def test_a_jobs_user_is_set_after_the_bounding_set_and_before_no_new_privs_and_capset(ids):
    tokens = plan.job_plan(job(ids=ids, user=Credentials(1000, 1001, (20, 30), "/home/app")), SCRATCH)
    order = names(tokens)
    # the bounding set needs CAP_SETPCAP, which leaving uid 0 takes away; seccomp refuses nothing
    # the op calls, but it is last before exec anyway
    assert order.index("hostname") < order.index("ids") < order.index("nnp") < order.index("capset")
    if ids is not None:
        assert order.index("setuser") < order.index("bounding") < order.index("ids")
    assert args_of(tokens, "ids") == [["1000", "1001", "20,30"]]
    assert [args[0] for args in args_of(tokens, "step")][-4:] == ["user", "no_new_privs", "capabilities", "seccomp"]
    # a user other than root keeps no capability, the inheritable set included
    assert args_of(tokens, "capset") == [["0"]]


def test_root_by_name_keeps_the_kept_capabilities_and_no_user_adds_no_op():
    as_root = plan.job_plan(job(user=Credentials(0, 1000)), SCRATCH)
    assert args_of(as_root, "ids") == [["0", "1000", ""]]
    assert int(args_of(as_root, "capset")[0][0], 16) == caps.mask_of(caps.DEFAULT_KEEP)
    assert "ids" not in names(plan.job_plan(job(), SCRATCH))  # no User: the plan of every job without one


def test_with_user_namespace_the_rootfs_is_idmapped_and_the_writable_layer_given_to_the_jobs_root():
    tokens = plan.job_plan(job(ids=IDS, writable_bytes=32 << 20), SCRATCH)
    assert args_of(tokens, "idmap") == [["/rootfs", "/scratch/lower"]]
    overlay = next(args for args in args_of(tokens, "mount") if args[2] == "overlay")
    assert overlay[4].startswith("lowerdir=/scratch/lower,")
    assert args_of(tokens, "chown") == [["/scratch/upper", str(IDS.uid), str(IDS.gid)],
                                        ["/scratch/tmp", str(IDS.uid), str(IDS.gid)]]
    remount = args_of(tokens, "mount")[0]
    assert remount == ["", "/scratch", "", str(kernel.MS_REMOUNT | kernel.MS_NOSUID | kernel.MS_NODEV), f"size={32 << 20}"]
    assert args_of(tokens, "bounding") == [[f"{caps.mask_of(caps.DEFAULT_KEEP):x}", "40"]]


@pytest.mark.parametrize("ids", [None, IDS], ids=["no-userns", "userns"])
def test_spare_plan_prepares_what_needs_no_job_and_then_waits(ids):
    tokens = plan.spare_plan(Scratch("/state/root"), 0x5, 40, ids)
    order = names(tokens)
    expected = ["name", "pdeathsig", "closefds", "setsid", "unshare", "mount", "mount",
                "mkdir", "mkdir", "mkdir", "mkdir", "mkdir"]
    expected += ["userns", "loopback", "wait"] if ids else ["loopback", "bounding", "wait"]
    assert order == expected
    unshare = int(args_of(tokens, "unshare")[0][0], 16)
    assert not unshare & kernel.CLONE_NEWPID
    # with a user namespace the network namespace is made inside it (the userns op)
    assert unshare == (plan.SPARE_NAMESPACES & ~kernel.CLONE_NEWNET if ids else plan.SPARE_NAMESPACES)
    if ids:
        assert args_of(tokens, "userns") == [[str(IDS.uid), str(IDS.gid), "65536"]]
    else:
        assert args_of(tokens, "bounding") == [["5", "40"]]
    propagation, scratch = args_of(tokens, "mount")
    assert propagation == ["", "/", "", str(kernel.MS_REC | kernel.MS_PRIVATE), ""]
    assert scratch[1:3] == ["/state/root", "tmpfs"] and int(scratch[3]) & kernel.MS_NODEV
    assert ["/state/root/tmp", "1777"] in args_of(tokens, "mkdir")


def test_every_op_is_one_the_c_init_knows_with_the_same_arity():
    source = (JOBINIT_DIR / "jobinit.c").read_text()  # the interpreter, which holds the ops table
    table = source[source.index("OPS[] = {"):]
    table = table[:table.index("};")]
    in_c = {name: int(count) for name, count in re.findall(r'\{"(\w+)", (-?\d+), \w+\}', table)}
    assert in_c == plan.ARITY
    for tokens in (plan.job_plan(job(ids=IDS, writable_bytes=1 << 20, user=Credentials(1, 2, (3,))), Scratch("/s")),
                   plan.spare_plan(Scratch("/s"), 1, 40, IDS)):
        assert all(name in plan.ARITY for name, _ in plan.ops(tokens))


SECCOMP_C = (JOBINIT_DIR / "seccomp.c").read_text()  # the syscalls a rule may name
JOBINIT_H = (JOBINIT_DIR / "jobinit.h").read_text()  # the filter's bounds


def test_seccomp_rules_are_encoded_as_the_init_reads_them():
    assert plan.SeccompRule(("acct", "reboot"), 1).token() == "1 acct,reboot"
    assert plan.SeccompRule(("clone",), 1, arg0_any_bit=0x7E020000).token() == "1 clone &7e020000"
    assert plan.SeccompRule(("socket", "socketpair"), 97, arg0_allowed=(1, 2, 10)).token() == "97 socket,socketpair !1,2,a"
    assert plan.SeccompRule(("personality",), 1, arg0_allowed=(0, 0xFFFFFFFF)).token() == "1 personality !0,ffffffff"
    rules = (plan.SeccompRule(("acct",), 1), plan.SeccompRule(("clone3",), 38))
    assert plan.seccomp_token(rules) == "1 acct;38 clone3"
    args = next(a for n, a in plan.ops(plan.job_plan(job(), Scratch("/s"))) if n == "seccomp")
    assert args == [plan.seccomp_token(plan.SECCOMP_RULES)]


@pytest.mark.parametrize("rule", [
    plan.SeccompRule(("acct",), 0), plan.SeccompRule(("acct",), 4096), plan.SeccompRule((), 1),
    plan.SeccompRule(("acct,reboot",), 1), plan.SeccompRule(("acct;1 reboot",), 1), plan.SeccompRule(("",), 1),
    plan.SeccompRule(("socket",), 97, arg0_any_bit=1, arg0_allowed=(2,)),
    plan.SeccompRule(("socket",), 97, arg0_allowed=(-1,)), plan.SeccompRule(("clone",), 1, arg0_any_bit=1 << 32),
])
def test_a_seccomp_rule_the_init_could_not_read_is_refused(rule):
    with pytest.raises(ValueError):
        rule.token()


def test_every_syscall_in_the_seccomp_rules_is_one_the_c_init_can_name_within_its_bounds():
    in_c = set(re.findall(r"SC\((\w+)\)", SECCOMP_C))
    bounds = {name: int(value) for name, value in re.findall(r"#define (MAX_\w+) (\d+)", JOBINIT_H)}
    names = [name for rule in plan.SECCOMP_RULES for name in rule.syscalls]
    assert set(names) <= in_c, set(names) - in_c
    assert len(names) == len(set(names))  # the init refuses a syscall named in two rules
    assert len(names) <= bounds["MAX_SYSCALLS"] and len(plan.SECCOMP_RULES) <= bounds["MAX_RULES"]
    assert all(len(rule.arg0_allowed) <= bounds["MAX_VALUES"] for rule in plan.SECCOMP_RULES)


def test_seccomp_policy_is_the_one_the_readme_describes():
    by_name = {name: rule for rule in plan.SECCOMP_RULES for name in rule.syscalls}
    # a job may still debug its own processes (as Docker on kernels >= 4.8)
    assert not {"ptrace", "process_vm_readv", "process_vm_writev"} & set(by_name)
    assert all(by_name[name].errno == errno.ENOSYS for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"))
    # clone3 hides its flags from the filter: ENOSYS sends libc to clone(), whose flags are read
    assert by_name["clone3"] == plan.SeccompRule(("clone3",), errno.ENOSYS)
    clone = by_name["clone"]
    assert clone.errno == errno.EPERM and clone.arg0_any_bit == 0x7E020000  # every CLONE_NEW* clone() takes
    for name in ("socket", "socketpair"):
        assert by_name[name].errno == errno.EAFNOSUPPORT
        assert set(by_name[name].arg0_allowed) == {socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK,
                                                   socket.AF_PACKET}
    assert set(by_name["personality"].arg0_allowed) == {0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF}
    for name in ("mount", "unshare", "setns", "keyctl", "bpf", "syslog", "vhangup", "fanotify_init", "quotactl_fd",
                 "mbind", "set_mempolicy", "get_mempolicy", "pidfd_getfd", "open_by_handle_at", "userfaultfd"):
        assert by_name[name].errno == errno.EPERM and not by_name[name].arg0_allowed, name


def test_plans_that_the_init_would_refuse_are_refused_here_too():
    with pytest.raises(ValueError, match="unknown op"):
        list(plan.ops(["frobnicate"]))
    with pytest.raises(ValueError, match="needs 5 arguments"):
        list(plan.ops(["mount", "a", "b"]))
    with pytest.raises(ValueError, match="NUL"):
        plan.encode(["exec", "/", "", "1", "a\0b", "0"])


def test_encoding_is_a_length_then_nul_terminated_tokens():
    data = plan.encode(["nnp", "hostname", "h"])
    (length,) = struct.unpack(">I", data[:4])
    assert data[4:] == b"nnp\0hostname\0h\0" and length == len(data) - 4


def exec_prepared(userns: bool = True, user: Credentials | None = None) -> plan.PreparedExec:
    return plan.PreparedExec(job_pid=4242, user_namespace=userns, cgroup_procs=("/sys/fs/cgroup/memory/j/cgroup.procs",),
                             argv=("/bin/sh", "-c", "id"), env={"PATH": "/bin", "HOME": "/root"}, cwd="/srv",
                             keep_caps=0xA00425FB, cap_last=40, user=user)


def test_an_exec_enters_the_job_in_the_order_that_keeps_it_contained():
    tokens = plan.exec_plan(exec_prepared())
    names = [name for name, _ in plan.ops(tokens)]
    order = lambda *ops: [names.index(op) for op in ops]  # noqa: E731
    assert names[0] == "now" and names.index("nodump") < names.index("pidfd")  # not dumpable before it touches the job
    # the child joins the PID namespace (made for it by the parent), then the cgroup by its host path, then the
    # other namespaces, the user namespace last, then drops what the job dropped, seccomp last before exec
    assert order("pidfd", "forkwait", "cgroup") == sorted(order("pidfd", "forkwait", "cgroup"))
    setns = [args[0] for name, args in plan.ops(tokens) if name == "setns"]
    assert setns == [f"{kernel.CLONE_NEWPID:x}", f"{plan.ENTERED_NAMESPACES:x}", f"{kernel.CLONE_NEWUSER:x}"]
    assert names.index("forkwait") < names.index("cgroup") < [i for i, n in enumerate(names) if n == "setns"][1]
    tail = [name for name in names if name in ("bounding", "ids", "nnp", "capset", "seccomp", "exec")]
    assert tail == ["bounding", "ids", "nnp", "capset", "seccomp", "exec"]
    assert dict(plan.ops(tokens))["ids"] == ["0", "0", ""]  # the job's root in its user namespace, not host root
    assert tokens[tokens.index("exec"):] == ["exec", "/srv", "/bin", "3", "/bin/sh", "-c", "id", "2", "PATH=/bin",
                                             "HOME=/root"]


def test_an_exec_without_a_user_namespace_stays_host_root_with_the_jobs_bounding_set_and_a_user_drops_all():
    names = [name for name, _ in plan.ops(plan.exec_plan(exec_prepared(userns=False)))]
    assert "ids" not in names and names.count("setns") == 2
    tokens = plan.exec_plan(exec_prepared(user=Credentials(1000, 1000, (5, 6), "/home/a")))
    ops = dict(plan.ops(tokens))
    assert ops["ids"] == ["1000", "1000", "5,6"] and ops["capset"] == ["0"]
    assert ops["bounding"] == [f"{0xA00425FB:x}", "40"]
