"""The daemon's log lines in their three forms (text, text for the journal, JSON) and its
readiness message to systemd, without a daemon: records formatted by hand, a real file as the
"journal" stream, a real datagram socket as NOTIFY_SOCKET."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import sys

from lclusterd import logformat


def record(level: int, message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    made = logging.LogRecord("lclusterd.cluster.worker", level, __file__, 1, message, args, exc_info)
    made.__dict__.update(extra)
    return made


def failure():
    try:
        raise ValueError("boom")
    except ValueError:
        return sys.exc_info()


def test_text_on_a_terminal_or_file_is_as_before():
    line = logformat.TextFormatter().format(record(logging.ERROR, "cannot listen on %s", "x:1"))
    assert line == "lclusterd: ERROR cannot listen on x:1"


def test_text_for_the_journal_has_its_priority_on_every_line_and_no_name():
    formatter = logformat.TextFormatter(journal=True)
    assert formatter.format(record(logging.INFO, "serving")) == "<6>INFO serving"
    assert formatter.format(record(logging.WARNING, "w")) == "<4>WARNING w"
    lines = formatter.format(record(logging.ERROR, "bug", exc_info=failure())).split("\n")
    assert lines[0] == "<3>ERROR bug" and len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_json_is_one_object_per_line_with_the_structured_fields():
    line = logformat.JsonFormatter().format(record(logging.WARNING, "fencing job %s", "ab", job="ab", attempt=2))
    data = json.loads(line)
    assert data.pop("time").endswith("Z")
    assert data == {"level": "warning", "logger": "lclusterd.cluster.worker", "message": "fencing job ab", "job": "ab",
                    "attempt": 2}
    line = logformat.JsonFormatter().format(record(logging.ERROR, "bug", exc_info=failure()))
    assert "\n" not in line and json.loads(line)["exception"].endswith("ValueError: boom")
    assert logformat.JsonFormatter(journal=True).format(record(logging.DEBUG, "d")).startswith('<7>{"time": ')


def test_the_journal_is_recognised_by_the_stream_it_named(tmp_path):
    with open(tmp_path / "stream", "w") as stream, open(tmp_path / "other", "w") as other:
        st = os.fstat(stream.fileno())
        named = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert logformat.to_journal(stream, named)
        assert not logformat.to_journal(other, named)  # a child whose stderr went elsewhere
        assert not logformat.to_journal(stream, {})
        assert not logformat.to_journal(io.StringIO(), named)


def test_configure_logging_replaces_the_handlers(tmp_path):
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logformat.configure_logging("warning", "json", stream=out)
        logging.getLogger("lclusterd.x").info("hidden")
        logging.getLogger("lclusterd.x").warning("shown", extra={"node": "n1"})
        lines = out.getvalue().splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["node"] == "n1"
    finally:
        root.handlers[:], root.level = saved


def test_notify_systemd_sends_a_datagram(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        logformat.notify_systemd("READY=1")
        assert server.recv(100) == b"READY=1"
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    logformat.notify_systemd("STOPPING=1")  # never raises
    monkeypatch.delenv("NOTIFY_SOCKET")
    logformat.notify_systemd("READY=1")
