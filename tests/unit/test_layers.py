"""Imports point down only (docs/conventions.md, "Layers"), checked with ast on the source."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# module prefix -> project modules it may import (prefix match)
ALLOWED = {
    "lclient": ("lclient", "lclusterd.rpc", "lclusterd.units", "lclusterd.states", "lclusterd.limits",
                "lclusterd.errors"),
    "lclusterd.api": ("lclusterd.api", "lclusterd.cluster", "lclusterd.model", "lclusterd.errors", "lclusterd.rpc",
                      "lclusterd.states", "lclusterd.certs"),
    "lclusterd.certs": (),
    "lclusterd.cluster": ("lclusterd.cluster", "lclusterd.runtime.launcher", "lclusterd.runtime.spec",
                          "lclusterd.runtime.images.config", "lclusterd.model",
                          "lclusterd.records", "lclusterd.errors", "lclusterd.units", "lclusterd.limits", "lclusterd.states",
                          "lclusterd.metrics"),
    # the instruments and the plain functions every layer may call to feed them
    "lclusterd.metrics": ("lclusterd.metrics", "lclusterd.states"),
    "lclusterd.logformat": (),
    "lclusterd.model": ("lclusterd.errors", "lclusterd.limits", "lclusterd.records", "lclusterd.states", "lclusterd.nodeinfo"),
    "lclusterd.nodeinfo": ("lclusterd.records",),
    "lclusterd.records": ("lclusterd.errors", "lclusterd.states", "lclusterd.limits"),
    "lclusterd.states": (),
    "lclusterd.limits": ("lclusterd.errors",),
    "lclusterd.errors": (),
    # config derives defaults from host facts (memory, pid_max), read by the runtime's host module
    "lclusterd.config": ("lclusterd.model", "lclusterd.units", "lclusterd.limits", "lclusterd.runtime.host",
                         "lclusterd.cluster.placement"),
    # the embedded etcd and its TLS files and supervision, beside the layers (the wiring uses them)
    "lclusterd.etcd_embedded": ("lclusterd.etcd_tls",),
    "lclusterd.etcd_supervisor": ("lclusterd.etcd_embedded", "lclusterd.etcd_tls"),
    "lclusterd.etcd_tls": ("lclusterd.certs",),
    "lclusterd.rpc": ("lclusterd.rpc",),
    "lclusterd.runtime": ("lclusterd.runtime", "lclusterd.errors", "lclusterd.units", "lclusterd.limits", "lclusterd.states"),
    "lclusterd.units": (),
    # the web page: the API's services and checks, answered in lclient's shapes and words (its
    # JSON is lclient -json's; forms parse sizes and durations as lclient's options do)
    "lclusterd.web": ("lclusterd.web", "lclusterd.api", "lclusterd.cluster", "lclusterd.model", "lclusterd.errors",
                      "lclusterd.rpc", "lclusterd.states", "lclient.format", "lclient.units"),
}
THIRD_PARTY_ONLY_IN = {"etcd3": ("lclusterd.cluster.store",), "grpc": ("lclient", "lclusterd.api", "lclusterd.rpc",
                                                                        "lclusterd.daemon", "lclusterd.cluster.store"),
                      "flask": ("lclusterd.web",), "werkzeug": ("lclusterd.web",), "cheroot": ("lclusterd.web.server",),
                      # links, addresses and routes: the bridge's (IPRoute) and each job's (its messages)
                      "pyroute2": ("lclusterd.runtime.bridge", "lclusterd.runtime.rtnl"),
                      "prometheus_client": ("lclusterd.metrics",)}


def modules():
    for package in ("lclusterd", "lclient"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            yield name, ast.parse(path.read_text(), str(path))


def imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _rule(name: str):
    matches = [p for p in ALLOWED if name == p or name.startswith(p + ".")]
    return ALLOWED[max(matches, key=len)] if matches else None


def test_project_imports_point_down():
    problems = []
    for name, tree in modules():
        allowed = _rule(name)
        if allowed is None:  # daemon.py, __main__.py, lclusterd/__init__: the wiring may import anything
            continue
        for imported in imports(tree):
            if not imported.startswith(("lclusterd", "lclient")) or imported in ("lclusterd", "lclusterd.__version__"):
                continue
            if not _is_module(imported):  # `from lclusterd.model import JobRecord`: the module is what counts
                imported = imported.rsplit(".", 1)[0]
            if not any(imported == a or imported.startswith(a + ".") for a in allowed):
                problems.append(f"{name} imports {imported}")
    assert not problems, "\n".join(sorted(problems))


def _is_module(dotted: str) -> bool:
    path = ROOT / dotted.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_third_party_clients_are_imported_in_their_one_place():
    """etcd3 only in the store (one place speaks etcd's API); grpc only where the API is
    served or called (the control plane's other modules know neither)."""
    problems = []
    for name, tree in modules():
        for imported in imports(tree):
            package = imported.split(".")[0]
            homes = THIRD_PARTY_ONLY_IN.get(package)
            if homes is not None and not any(name == h or name.startswith(h + ".") for h in homes):
                problems.append(f"{name} imports {imported}")
    assert not problems, "\n".join(sorted(problems))
