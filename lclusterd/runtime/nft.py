"""The runtime's nftables rules, and the one way it changes them: `nft -j -f -`.

One table of our own, `inet lclusterd`, shared by every bridge on the host; each rule
carries a comment saying whose it is, so it can be found and removed exactly:

    "lclusterd bridge BR"              a bridge's own rules, while any fork server uses it
    "lclusterd job BR ADDRESS JOBID"   a job's published port (two rules per port)

    prerouting  nat, dstnat     published ports: fib daddr type local, th dport H -> dnat to
                                the job's address and port (traffic from other hosts and jobs)
    output      nat, -100       the same, for connections made on this host (127.0.0.1:H)
    postrouting nat, srcnat     a bridge's: masquerade its subnet leaving by another interface
                                (outbound NAT); masquerade 127.0.0.0/8 and the subnet when a
                                published port sends them into the bridge, so the job answers
                                through the host (its loopback is its own; a job that reached
                                another through a node address expects the answer from there)
    guard       filter, raw     a bridge's: drop what comes in from it for 127.0.0.0/8, which
                                route_localnet (needed for 127.0.0.1:H) would otherwise let a
                                job with NET_RAW send to the host's loopback services

The JSON interface, through libnftables (package libnftables1, which nftables depends on)
called with ctypes, as the python3-nftables bindings do (those live in the system's Python
path, which the project's venv does not see). Not `nft -j -f -`: each exec of nft cost 3-7 ms
to add a job's rules and 9-20 ms to delete them here, most of it in closing its netlink
socket (the kernel waits out an RCU grace period); one context kept open by the fork server
does the same in 0.1-0.3 ms. The JSON is the same either way: `nft -j -f file` reads what
these builders make. Builders here are pure; Nft is the only call out.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

FAMILY, TABLE = "inet", "lclusterd"
LIBRARY = "libnftables.so.1"
# nft_ctx_output_set_flags: NFT_CTX_OUTPUT_HANDLE, _JSON, _ECHO (libnftables' own header)
OUTPUT_HANDLE, OUTPUT_JSON, OUTPUT_ECHO = 1 << 3, 1 << 4, 1 << 5
Command = dict[str, Any]


class NftError(OSError):
    """nftables refused a batch (the batch changed nothing: it is applied atomically)."""


@dataclass(frozen=True)
class Rule:
    """A rule as found in the table: enough to delete it and to say whose it is."""

    chain: str
    handle: int
    comment: str


class Nft:
    """A libnftables context, kept for the fork server's life. OSError if the library is missing."""

    def __init__(self) -> None:
        try:
            self.lib = _library()
        except OSError:
            raise OSError(f"{LIBRARY} not found: bridge networks need nftables (apt-get install nftables)") from None
        self.ctx = self.lib.nft_ctx_new(0)
        if not self.ctx:
            raise OSError("nft_ctx_new failed")
        self.lib.nft_ctx_buffer_output(self.ctx)
        self.lib.nft_ctx_buffer_error(self.ctx)

    def close(self) -> None:
        self.lib.nft_ctx_free(self.ctx)

    def run(self, commands: list[Command], echo: bool = False) -> list[Command]:
        """Apply the commands as one transaction. echo: return them as nftables added them, with
        their handles. Raises NftError with nftables' own message."""
        return self._run({"nftables": commands}, OUTPUT_JSON | (OUTPUT_ECHO | OUTPUT_HANDLE if echo else 0))

    def list_rules(self) -> list[Rule] | None:
        """Every rule of our table; None when there is no table."""
        try:
            listed = self._run({"nftables": [{"list": {"table": {"family": FAMILY, "name": TABLE}}}]},
                               OUTPUT_JSON | OUTPUT_HANDLE)
        except NftError:
            return None
        return [Rule(item["rule"]["chain"], item["rule"]["handle"], item["rule"].get("comment", ""))
                for item in listed if "rule" in item]

    def _run(self, request: dict[str, Any], flags: int) -> list[Command]:
        self.lib.nft_ctx_output_set_flags(self.ctx, flags)  # JSON out also makes it read JSON in
        if self.lib.nft_run_cmd_from_buffer(self.ctx, json.dumps(request).encode()) != 0:
            raise NftError(f"nftables: {(self.lib.nft_ctx_get_error_buffer(self.ctx) or b'failed').decode().strip()}")
        output = self.lib.nft_ctx_get_output_buffer(self.ctx)
        return json.loads(output).get("nftables", []) if output and output.strip() else []


def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(LIBRARY)
    lib.nft_ctx_new.restype, lib.nft_ctx_new.argtypes = ctypes.c_void_p, [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_buffer_output.argtypes = lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    for getter in (lib.nft_ctx_get_output_buffer, lib.nft_ctx_get_error_buffer):
        getter.argtypes, getter.restype = [ctypes.c_void_p], ctypes.c_char_p
    return lib


def handles_of(echoed: list[Command]) -> list[tuple[str, int]]:
    """(chain, handle) of each rule in run(..., echo=True)'s answer."""
    return [(item["add"]["rule"]["chain"], item["add"]["rule"]["handle"])
            for item in echoed if "rule" in item.get("add", {})]


def delete_rules(rules: list[tuple[str, int]]) -> list[Command]:
    return [{"delete": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "handle": handle}}}
            for chain, handle in rules]


# -- the table and a bridge's own rules -------------------------------------------------------

def bridge_comment(bridge: str) -> str:
    return f"lclusterd bridge {bridge}"


def job_comment(bridge: str, address: IPv4Address, job_id: str) -> str:
    return f"lclusterd job {bridge} {address} {job_id}"


def job_address(comment: str, bridge: str) -> IPv4Address | None:
    """The address a job rule of this bridge is for, or None for any other rule."""
    words = comment.split()
    if len(words) != 5 or words[:3] != ["lclusterd", "job", bridge]:
        return None
    try:
        return IPv4Address(words[3])
    except ValueError:
        return None


def table() -> list[Command]:
    """Our table and its chains: `add` leaves existing ones as they are."""
    def chain(name: str, kind: str, hook: str, priority: int) -> Command:
        return {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name, "type": kind, "hook": hook,
                                  "prio": priority, "policy": "accept"}}}
    return [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
            chain("prerouting", "nat", "prerouting", -100), chain("output", "nat", "output", -100),
            chain("postrouting", "nat", "postrouting", 100), chain("guard", "filter", "prerouting", -300)]


def bridge_rules(bridge: str, subnet: IPv4Network) -> list[Command]:
    """A bridge's own rules (see the module docstring)."""
    comment = bridge_comment(bridge)
    source = _match(_payload("ip", "saddr"), _prefix(subnet))
    to_bridge = _match({"meta": {"key": "oifname"}}, bridge)
    dnat = _match({"ct": {"key": "status"}}, "dnat", op="in")
    return [
        _rule("postrouting", comment, source, _match({"meta": {"key": "oifname"}}, bridge, op="!="), {"masquerade": None}),
        _rule("postrouting", comment, to_bridge, dnat, _match(_payload("ip", "saddr"), _prefix(IPv4Network("127.0.0.0/8"))),
              {"masquerade": None}),
        _rule("postrouting", comment, to_bridge, dnat, source, {"masquerade": None}),
        _rule("guard", comment, _match({"meta": {"key": "iifname"}}, bridge),
              _match(_payload("ip", "daddr"), _prefix(IPv4Network("127.0.0.0/8"))), {"drop": None}),
    ]


def publish_rules(comment: str, host_port: int, address: IPv4Address, port: int, protocol: str) -> list[Command]:
    """A published port: the node's addresses' host_port to the job's address and port, for
    traffic arriving (prerouting) and made on this host (output)."""
    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    return [_rule(chain, comment, _match({"meta": {"key": "nfproto"}}, "ipv4"), local,
                  _match({"meta": {"key": "l4proto"}}, protocol), _match(_payload("th", "dport"), host_port),
                  {"dnat": {"family": "ip", "addr": str(address), "port": port}})
            for chain in ("prerouting", "output")]


def delete_table() -> list[Command]:
    return [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}]


def _rule(chain: str, comment: str, *expr: Command) -> Command:
    return {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "comment": comment, "expr": list(expr)}}}


def _match(left: Command, right: Any, op: str = "==") -> Command:
    return {"match": {"op": op, "left": left, "right": right}}


def _payload(protocol: str, field: str) -> Command:
    return {"payload": {"protocol": protocol, "field": field}}


def _prefix(network: IPv4Network) -> Command:
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}
