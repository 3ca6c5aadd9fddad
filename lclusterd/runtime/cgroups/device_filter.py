"""The cgroup v2 device filter: a BPF_PROG_TYPE_CGROUP_DEVICE program, as bytes. Pure.

cgroup v2 has no devices controller; the kernel runs the BPF program attached to a
cgroup (or inherited from its nearest ancestor) on every open and mknod of a device
node, and refuses the access with EPERM when it returns 0. The program gets a
struct bpf_cgroup_dev_ctx in r1:

    u32 access_type   device type (BPF_DEVCG_DEV_BLOCK 1, _CHAR 2) in the low 16 bits,
                      the access wanted (BPF_DEVCG_ACC_MKNOD 1, _READ 2, _WRITE 4) above
    u32 major
    u32 minor

build_program() turns device rules into a straight list of checks: load the fields,
then one block per rule that jumps past itself on the first field that does not match
and otherwise returns 1; after the last rule, return 0. Jumps only go forward, so the
verifier has no loop to reject. Every instruction is struct bpf_insn (linux/bpf.h):
u8 opcode, u8 registers (dst in the low nibble, src in the high), s16 offset, s32
immediate, little-endian (x86_64 and aarch64).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from lclusterd.runtime.devices import BLOCK, CHAR, DeviceRule

# Opcodes (class | operation | source), the few this program uses.
LDX_MEM_W = 0x61  # dst = *(u32 *)(src + off)
ALU64_AND_K = 0x57  # dst &= imm
ALU64_RSH_K = 0x77  # dst >>= imm
ALU64_MOV_K = 0xB7  # dst = imm
ALU64_MOV_X = 0xBF  # dst = src
JMP_JNE_K = 0x55  # if dst != imm: pc += off
EXIT = 0x95  # return r0

DEV_TYPE = {BLOCK: 1, CHAR: 2}  # BPF_DEVCG_DEV_*
ACCESS_BITS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_*
ALL_ACCESS = 7

# Registers: r1 holds the context on entry; the fields are loaded into these.
R_CTX, R_TYPE, R_ACCESS, R_MAJOR, R_MINOR, R_SCRATCH = 1, 2, 3, 4, 5, 6


def insn(opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", opcode, src << 4 | dst, off, imm)


def load_context() -> list[bytes]:
    return [
        insn(LDX_MEM_W, R_TYPE, R_CTX, 0),
        insn(ALU64_MOV_X, R_ACCESS, R_TYPE),
        insn(ALU64_AND_K, R_TYPE, imm=0xFFFF),
        insn(ALU64_RSH_K, R_ACCESS, imm=16),
        insn(LDX_MEM_W, R_MAJOR, R_CTX, 4),
        insn(LDX_MEM_W, R_MINOR, R_CTX, 8),
    ]


def rule_block(rule: DeviceRule) -> list[bytes]:
    """Return 1 when the device matches the rule; else fall through to the next block."""
    # Each check is (instructions before the jump, register, value it must equal).
    checks: list[tuple[list[bytes], int, int]] = [([], R_TYPE, DEV_TYPE[rule.kind])]
    if rule.major is not None:
        checks.append(([], R_MAJOR, rule.major))
    if rule.minor is not None:
        checks.append(([], R_MINOR, rule.minor))
    denied = ALL_ACCESS & ~sum(ACCESS_BITS[letter] for letter in rule.access)
    if denied:  # the access wanted must have none of the bits the rule leaves out
        mask = [insn(ALU64_MOV_X, R_SCRATCH, R_ACCESS), insn(ALU64_AND_K, R_SCRATCH, imm=denied)]
        checks.append((mask, R_SCRATCH, 0))
    tail = [insn(ALU64_MOV_K, 0, imm=1), insn(EXIT)]
    block: list[bytes] = []
    remaining = sum(len(before) + 1 for before, _, _ in checks) + len(tail)
    for before, register, value in checks:
        block += before
        remaining -= len(before) + 1
        block.append(insn(JMP_JNE_K, register, off=remaining, imm=value))  # skip the rest of the block
    return block + tail


def build_program(rules: Iterable[DeviceRule]) -> bytes:
    """The program allowing exactly `rules` (every other device access returns 0: EPERM)."""
    program = load_context()
    for rule in rules:
        program += rule_block(rule)
    program += [insn(ALU64_MOV_K, 0, imm=0), insn(EXIT)]
    return b"".join(program)
