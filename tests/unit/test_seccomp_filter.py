"""The BPF the job init's filter compiler (jobinit/seccomp.c) makes of plan.SECCOMP_RULES,
run here by a small classic-BPF interpreter for every syscall number: each syscall a rule
names gets that rule's answer, for arguments on both sides of its condition, and every
other one is allowed. No root and no kernel: test_jobinit.py runs the real filter."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lclusterd.runtime import plan

RET_ALLOW, RET_KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
X32_SYSCALL_BIT = 0x40000000


class Filter:
    def __init__(self, output: str):
        self.syscalls: dict[str, int] = {}
        self.insns: list[tuple[int, int, int, int]] = []
        for line in output.splitlines():
            kind, *fields = line.split()
            if kind == "arch":
                self.arch = int(fields[0], 16)
            elif kind == "syscall":
                self.syscalls[fields[0]] = int(fields[1])
            else:
                code, jt, jf, k = map(int, fields)
                self.insns.append((code, jt, jf, k))

    def run(self, nr: int, arg0: int = 0, arch: int | None = None) -> int:
        """What the filter returns for a call (the subset of classic BPF seccomp.c emits)."""
        data = {0: nr, 4: self.arch if arch is None else arch, 16: arg0 & 0xFFFFFFFF}
        a, pc = 0, 0
        while True:
            code, jt, jf, k = self.insns[pc]
            if code == 0x20:  # LD W ABS
                a, pc = data[k], pc + 1
            elif code == 0x05:  # JA
                pc += 1 + k
            elif code in (0x15, 0x35, 0x45):  # JEQ, JGE, JSET
                taken = a == k if code == 0x15 else a >= k if code == 0x35 else bool(a & k)
                pc += 1 + (jt if taken else jf)
            elif code == 0x06:  # RET
                return k
            else:
                raise AssertionError(f"unexpected BPF instruction {code:#x}")


@pytest.fixture(scope="module")
def compiler(tmp_path_factory):
    """Runs the compiler on a rules token: a Filter, or (errno, reason) when refused."""
    binary = tmp_path_factory.mktemp("seccomp") / "seccomp_dump"
    source = Path(__file__).parent / "data" / "seccomp_dump.c"
    subprocess.run(["musl-gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-static", "-o", str(binary), str(source)],
                   check=True)

    def compile_rules(rules: str) -> Filter | tuple[int, str]:
        done = subprocess.run([str(binary), rules], capture_output=True, text=True)
        return Filter(done.stdout) if done.returncode == 0 else (done.returncode, done.stderr.strip())
    return compile_rules


def test_every_syscall_gets_its_rules_answer_and_every_other_one_runs(compiler):
    bpf = compiler(plan.seccomp_token(plan.SECCOMP_RULES))
    named = set()
    for rule in plan.SECCOMP_RULES:
        refused = RET_ERRNO | rule.errno
        for name in rule.syscalls:
            nr = bpf.syscalls[name]
            named.add(nr)
            if rule.arg0_any_bit:
                assert bpf.run(nr, 0) == bpf.run(nr, ~rule.arg0_any_bit) == RET_ALLOW, name
                bits = [1 << b for b in range(32) if rule.arg0_any_bit >> b & 1]
                assert {bpf.run(nr, bit | 0x11) for bit in bits} == {refused}, name
            elif rule.arg0_allowed:
                assert {bpf.run(nr, value) for value in rule.arg0_allowed} == {RET_ALLOW}, name
                others = (set(range(64)) | {0x40, 0x40000, 0x20040, 0xFFFFFFFE}) - set(rule.arg0_allowed)
                assert {bpf.run(nr, value) for value in others} == {refused}, name
            else:
                assert {bpf.run(nr, value) for value in (0, 1, 0xFFFFFFFF)} == {refused}, name
    for nr in set(range(1024)) - named:
        assert bpf.run(nr, 0) == bpf.run(nr, 0x7E020000) == RET_ALLOW, nr


def test_other_architectures_are_killed_and_x32_refused(compiler):
    bpf = compiler(plan.seccomp_token(plan.SECCOMP_RULES))
    assert bpf.run(0, arch=0x40000003) == RET_KILL_PROCESS  # i386
    if bpf.arch == 0xC000003E:  # x86_64
        assert bpf.run(X32_SYSCALL_BIT | 1) == RET_ERRNO | 1


def test_no_rules_allow_everything_and_a_filter_stays_within_its_bounds(compiler):
    assert compiler("").run(1) == RET_ALLOW
    many = ";".join(f"{errno} {name}" for errno, name in enumerate(sorted(compiler("").syscalls), 1))
    assert compiler(many) == (7, "more than 16 rules")
    names = sorted(compiler("").syscalls)
    bpf = compiler("1 " + ",".join(names))
    assert {bpf.run(nr) for nr in bpf.syscalls.values()} == {RET_ERRNO | 1}
