"""The real job init binary (lclusterd-jobinit, built by make prep) run on its own, outside
any namespace: how it reports a failing step, holds back a spare's failure until its job
arrives, exits quietly when no job comes, and execs with the job's stdio. The runtime tests
(test_runtime.py) cover it inside real containers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from lclusterd.runtime import channel, plan


class Init:
    """The init spawned with `spare` as its argv plan and a socket on its fd 3."""

    def __init__(self, spare: list[str]):
        self.sock, theirs = socket.socketpair()
        with theirs:
            self.pid = os.posix_spawn(str(plan.JOBINIT), [str(plan.JOBINIT), *spare], {},
                                      file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)])

    def send_job(self, tokens: list[str], stdio: list[int]) -> None:
        channel.send_bytes(self.sock, plan.encode(tokens), stdio)

    def finish(self) -> tuple[bytes, int]:
        """What it wrote on its socket until EOF, and its exit status."""
        chunks = []
        while data := self.sock.recv(4096):
            chunks.append(data)
        self.sock.close()
        _, status = os.waitpid(self.pid, 0)
        return b"".join(chunks), os.waitstatus_to_exitcode(status)


def report(data: bytes) -> dict:
    assert data.startswith(b"E") and data.endswith(b"\n"), data
    return json.loads(data[1:])


@pytest.fixture
def stdio():
    with tempfile.TemporaryFile() as out, open(os.devnull, "rb") as null:
        yield [null.fileno(), out.fileno(), out.fileno()], out


def exec_tokens(argv: list[str], cwd: str = "/") -> list[str]:
    return ["exec", cwd, "/usr/bin:/bin", str(len(argv)), *argv, "1", "PATH=/usr/bin:/bin"]


def test_a_job_execs_with_its_stdio_and_reports_nothing(stdio):
    fds, out = stdio
    init = Init(["wait"])
    init.send_job(["stdio", *exec_tokens(["sh", "-c", "echo ok $PATH"])], fds)
    assert init.finish() == (b"", 0)
    out.seek(0)
    assert out.read() == b"ok /usr/bin:/bin\n"


def test_a_failing_job_step_is_reported_by_name_and_nothing_is_executed(tmp_path, stdio):
    marker = tmp_path / "ran"
    init = Init(["wait"])
    init.send_job(["step", "make things", "mkdir", str(tmp_path / "no" / "such"), "755",
                   "stdio", *exec_tokens(["touch", str(marker)])], stdio[0])
    data, code = init.finish()
    assert code == 127 and not marker.exists()
    assert report(data) == {"step": "make things", "errno": 2,
                            "detail": f"mkdir({tmp_path}/no/such): No such file or directory"}


def test_a_spare_failure_is_held_back_until_its_job_arrives(tmp_path, stdio):
    init = Init(["step", "scratch", "mkdir", str(tmp_path / "no" / "such"), "755", "loopback", "wait"])
    init.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):  # still waiting for its job, not exited
        init.sock.recv(1)
    init.sock.settimeout(None)
    init.send_job(["stdio", *exec_tokens(["true"])], stdio[0])
    data, code = init.finish()
    assert code == 127 and report(data)["step"] == "scratch"


def test_no_job_coming_exits_quietly():
    init = Init(["wait"])
    init.sock.shutdown(socket.SHUT_WR)
    assert init.finish() == (b"", 0)


def test_a_plan_it_does_not_understand_is_a_failure_not_a_crash(stdio):
    init = Init(["wait"])
    init.send_job(["step", "odd", "frobnicate", *exec_tokens(["true"])], stdio[0])
    data, code = init.finish()
    assert code == 127 and report(data) == {"step": "odd", "errno": 22, "detail": "unknown op frobnicate"}


def test_missing_command_and_working_directory_are_named(stdio):
    for tokens, detail in ((exec_tokens(["no-such-command"]), ("find command", "command not found in the rootfs: no-such-command")),
                           (exec_tokens(["true"], cwd="/no/such/dir"), ("chdir", "working directory /no/such/dir does not exist in the rootfs"))):
        init = Init(["wait"])
        init.send_job(["stdio", *tokens], stdio[0])
        data, code = init.finish()
        assert code == 127 and (report(data)["step"], report(data)["detail"]) == detail


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> str:
    """A static probe (data/seccomp_probe.c, built with the musl-gcc make prep installs) that
    makes each guarded call in a child of its own and prints `name ok` or `name <strerror>`."""
    binary = tmp_path_factory.mktemp("probe") / "seccomp_probe"
    subprocess.run(["musl-gcc", "-static", "-O2", "-o", str(binary), str(Path(__file__).parent / "data" / "seccomp_probe.c")],
                   check=True)
    return str(binary)


def run_probe(probe: str, stdio, filtered: bool, *args: str) -> dict[str, str]:
    fds, out = stdio
    out.seek(0)
    out.truncate()
    seccomp = ["nnp", "seccomp", plan.seccomp_token(plan.SECCOMP_RULES)] if filtered else []
    init = Init(["wait"])
    init.send_job(["stdio", *seccomp, *exec_tokens([probe, *args])], fds)
    assert init.finish() == (b"", 0)
    out.seek(0)
    return dict(line.split(" ", 1) for line in out.read().decode().splitlines())


EPERM, ENOSYS, EAFNOSUPPORT = "Operation not permitted", "Function not implemented", "Address family not supported by protocol"


def test_seccomp_refuses_what_the_plan_lists_and_lets_the_rest_through(probe, stdio):
    # without the filter each call works here (as root, outside any container) ...
    assert run_probe(probe, stdio, filtered=False) == {
        "keyctl": "ok", "syslog": "ok", "get_mempolicy": "ok", "quotactl_fd": "Bad file descriptor",
        "set_mempolicy_home_node": "ok", "cachestat": "Bad file descriptor", "map_shadow_stack": ENOSYS,
        "lsm_list_modules": "Bad address", "open_tree_attr": "Bad address", "unshare-user": "ok", "clone": "ok", "clone-newuser": "ok",
        "clone3": "Invalid argument", "io_uring_setup": "ok", "socket-vsock": "ok",
        "socketpair-vsock": "Not supported", "socket-inet": "ok", "socket-inet6": "ok", "socket-unix": "ok",
        "socketpair-unix": "ok", "personality-no-aslr": "ok", "personality-query": "ok", "getpid": "ok"}
    # ... with it: EPERM for listed calls, namespace flags and other personalities, ENOSYS for
    # clone3 and io_uring, EAFNOSUPPORT for socket families outside the list; the rest still work
    assert run_probe(probe, stdio, filtered=True) == {
        "keyctl": EPERM, "syslog": EPERM, "get_mempolicy": EPERM, "quotactl_fd": EPERM, "set_mempolicy_home_node": EPERM,
        "cachestat": EPERM, "map_shadow_stack": EPERM, "lsm_list_modules": EPERM, "open_tree_attr": EPERM,
        "unshare-user": EPERM, "clone": "ok", "clone-newuser": EPERM,
        "clone3": ENOSYS, "io_uring_setup": ENOSYS, "socket-vsock": EAFNOSUPPORT, "socketpair-vsock": EAFNOSUPPORT,
        "socket-inet": "ok", "socket-inet6": "ok", "socket-unix": "ok", "socketpair-unix": "ok",
        "personality-no-aslr": EPERM, "personality-query": "ok", "getpid": "ok"}


def test_seccomp_lets_exactly_the_listed_socket_families_through(probe, stdio):
    (families,) = [rule.arg0_allowed for rule in plan.SECCOMP_RULES if "socket" in rule.syscalls]
    results = run_probe(probe, stdio, True, "families")
    assert {name for name, result in results.items() if result == "ok"} == {f"socket-{f}" for f in families}
    assert {result for result in results.values() if result != "ok"} == {EAFNOSUPPORT}


@pytest.mark.parametrize("rules, errno, detail", [
    ("1 keyctl,frobnicate", 22, "unknown syscall frobnicate"),
    ("0 keyctl", 22, "malformed rule 0 keyctl"),
    ("1 keyctl;;1 acct", 22, "empty rule"),
    ("1 clone &7e020000,1", 22, "malformed condition &7e020000,1"),
    ("1 socket !2,zz", 22, "malformed condition !2,zz"),
    ("1 socket ?2", 22, "malformed condition ?2"),
    ("1 socket !2 x;1 acct", 22, "malformed rule 1 socket !2 x"),
    ("1 socket !" + ",".join(["2"] * 33), 7, "more than 32 values in a condition"),
    ("1 acct;38 clone3,acct", 22, "syscall acct in two rules"),
])
def test_seccomp_rules_the_init_cannot_read_are_refused(stdio, rules, errno, detail):
    init = Init(["wait"])
    init.send_job(["stdio", "nnp", "step", "seccomp", "seccomp", rules, *exec_tokens(["true"])], stdio[0])
    data, code = init.finish()
    assert code == 127 and report(data) == {"step": "seccomp", "errno": errno, "detail": f"seccomp: {detail}"}


def test_mkdirs_makes_directories_inside_the_root_whatever_its_links_say(tmp_path, stdio):
    """Each step is resolved inside ROOT (RESOLVE_IN_ROOT): a link to / or up past the top
    lands in ROOT itself; what is made is 0755 and owned as asked."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "to-root").symlink_to("/")
    (root / "up").symlink_to("../../../..")
    init = Init(["wait"])
    init.send_job(["umask", "0", "mkdirs", str(root), "/to-root/made/deeper", "12345", "23456",
                   "mkdirs", str(root), "/up/other", "-1", "-1", "stdio", *exec_tokens(["true"])], stdio[0])
    assert init.finish() == (b"", 0)
    made = root / "made" / "deeper"
    assert made.is_dir() and (made.stat().st_uid, made.stat().st_gid, made.stat().st_mode & 0o777) == (12345, 23456, 0o755)
    assert (root / "other").is_dir() and (root / "other").stat().st_uid == 0
    assert not os.path.exists("/made") and not os.path.exists("/other")


def test_a_volume_the_init_was_not_given_or_at_the_root_is_refused(tmp_path, stdio):
    root = tmp_path / "root"
    root.mkdir()
    (root / "to-root").symlink_to("/")
    init = Init(["wait"])
    init.send_job(["step", "volume /data", "volume", str(root), "/data", "0", *exec_tokens(["true"])], stdio[0])
    data, code = init.finish()
    assert code == 127 and report(data)["detail"] == "volume /data: no mount received for it (index 0 of 0)"
    init = Init(["wait"])
    with open(os.devnull, "rb") as stand_in:  # a descriptor in the volume's slot; the place is refused first
        init.send_job(["step", "volume /to-root", "volume", str(root), "/to-root", "0", *exec_tokens(["true"])],
                      [*stdio[0], stand_in.fileno()])
        data, code = init.finish()
    assert code == 127 and report(data) == {
        "step": "volume /to-root", "errno": 22,
        "detail": "mount point /to-root is the job's root (a symbolic link in the image leads there)"}
