"""A node as it registers itself under nodes/<name>: what it offers jobs. Pure."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from lclusterd import records


@dataclass
class NodeInfo:
    """A node as registered under nodes/<name> (under its lease)."""

    name: str
    address: str
    capacity: int
    version: str = ""
    started_at: float = 0.0
    memory_bytes: int = 0  # memory offered to jobs (what -mem requests are fitted against)
    max_pids: int = 0  # processes all its jobs may have together (0: a node that does not say)
    cores: int = 0  # CPU cores (0: a node that does not say)
    images: list[str] = field(default_factory=list)  # the images of its store, busybox (its rootfs) included
    images_without_command: list[str] = field(default_factory=list)  # those of them with no Entrypoint or Cmd
    subnet: str = ""  # its jobs' bridge subnet ("": it offers no -net bridge)
    volume_roots: list[str] = field(default_factory=list)  # host directories volumes may come from

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, key_name: str) -> NodeInfo:
        """The node registered under nodes/<key_name> (or members/), every field checked
        (records.py); RecordError. A newer node's extra fields are not ours to keep."""
        data = records.typed(records.load_json(raw, "the node record"), records.NODE_INFO, ("name", "address", "capacity"),
                             "the node record")
        records.check_node_info(data, key_name, "the node record")
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
