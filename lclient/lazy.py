"""A module imported on first use. Pure.

lclient's start-up is most of a short command's time: gRPC and protobuf cost several times
the interpreter's own start, and `-h`, a usage error or a bad uuid need neither. So the
modules that load them are named here and imported by the first attribute read."""

from __future__ import annotations

import sys
from types import ModuleType


class LazyModule:
    """Stands for the module `name` until an attribute is read, then is that module's attribute."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(self.load(), attr)

    def load(self) -> ModuleType:
        module = sys.modules.get(self._name)
        if module is None:
            __import__(self._name)
            module = sys.modules[self._name]
        return module
