"""etcd read with the official etcdctl, an independent reader of what the daemons wrote.

`cluster` is anything with `.etcd` (an EtcdProcess, an EtcdCluster or an embedded.EmbeddedEtcd)
and `.prefix`, such as a processes.Cluster or an embedded.EmbeddedView; reads go to the members
that are up, with the client certificate of that etcd when it runs TLS.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess

from support.etcd_pki import ClientTls


def etcdctl(endpoints: str, *args: str, timeout: float = 30, tls: ClientTls | None = None) -> subprocess.CompletedProcess:
    """etcdctl against `endpoints`, with `tls`'s files when given."""
    tls_args = tls.etcdctl_args() if tls else []
    return subprocess.run(["etcdctl", "--endpoints", endpoints, "--command-timeout", "5s", *tls_args, *args],
                          capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=timeout)


def etcd_prefix(cluster, section: str) -> dict[str, bytes]:
    """Every key under <prefix>/<section>/ (key -> value), read from the members that are up."""
    result = etcdctl(cluster.etcd.live_endpoints(), "get", "--prefix", f"{cluster.prefix}/{section}/", "-w", "json",
                     tls=getattr(cluster.etcd, "client_tls", None))
    assert result.returncode == 0, result.stderr
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
            for kv in json.loads(result.stdout).get("kvs", [])}


def raw_prefix(cluster, section: str) -> dict[str, bytes]:
    """As etcd_prefix, for keys that need not be UTF-8 (their bytes kept as surrogates, as the
    store reads them)."""
    result = etcdctl(cluster.etcd.live_endpoints(), "get", "--prefix", f"{cluster.prefix}/{section}/", "-w", "json",
                     tls=getattr(cluster.etcd, "client_tls", None))
    assert result.returncode == 0, result.stderr
    return {base64.b64decode(kv["key"]).decode(errors="surrogateescape"): base64.b64decode(kv.get("value", ""))
            for kv in json.loads(result.stdout).get("kvs", [])}


def etcd_records(cluster) -> dict[str, dict]:
    """Every job record, by job id."""
    return {key.rsplit("/", 1)[1]: json.loads(value) for key, value in etcd_prefix(cluster, "jobs").items()}


def prime_holder(cluster) -> str | None:
    """The name of the node that holds the prime key, or None (none does, or etcd did not answer)."""
    result = etcdctl(cluster.etcd.live_endpoints(), "get", f"{cluster.prefix}/prime", "--print-value-only",
                     tls=getattr(cluster.etcd, "client_tls", None))
    return result.stdout.strip() or None if result.returncode == 0 else None
