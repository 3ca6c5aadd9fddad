"""LogRelay with real pipes and files: output up to the cap lands in the log, then one
marker line, and the rest is counted and dropped while the writer goes on; the file is made
only once there is output."""

from __future__ import annotations

import os
import stat

from lclusterd.runtime.relay import LogRelay


def relay_to(path, limit: int, earlier: bytes | None = b"") -> tuple[LogRelay, int]:
    """A relay into `path` (with `earlier` in it already; None: no file yet)."""
    if earlier is not None:
        path.write_bytes(earlier)
    directory_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_fd, False)
    return LogRelay("stdout", read_fd, directory_fd, path.name, limit, os.open(os.devnull, os.O_WRONLY)), write_fd


def pump_all(relay: LogRelay, write_fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(write_fd, view[:65536]):]
        relay.pump()
    os.close(write_fd)
    assert relay.pump() is True  # EOF once the writer closed
    relay.close()


def test_output_under_the_cap_is_copied_whole(tmp_path):
    relay, write_fd = relay_to(tmp_path / "out", 8192)
    assert relay.pump() is False  # nothing yet, not at EOF
    pump_all(relay, write_fd, b"hello\n")
    assert (tmp_path / "out").read_bytes() == b"hello\n" and relay.dropped == 0


def test_output_over_the_cap_is_cut_with_one_marker_line_and_counted(tmp_path):
    relay, write_fd = relay_to(tmp_path / "out", 10_000)
    pump_all(relay, write_fd, b"y\n" * 300_000)
    data = (tmp_path / "out").read_bytes()
    kept, marker = data[:10_000], data[10_000:]
    assert kept == (b"y\n" * 5000) and marker == b"[lclusterd: stdout cut at 9.8 KiB (--max-log-size); the rest is dropped]\n"
    assert relay.written == 10_000 and relay.dropped == 600_000 - 10_000


def test_a_cut_mid_line_starts_the_marker_on_a_line_of_its_own_after_earlier_output(tmp_path):
    relay, write_fd = relay_to(tmp_path / "out", 4096, earlier=b"attempt 1\n")
    pump_all(relay, write_fd, b"x" * 5000)
    data = (tmp_path / "out").read_bytes()
    assert data.startswith(b"attempt 1\n" + b"x" * 4096 + b"\n[lclusterd: stdout cut at 4.0 KiB")
    assert data.count(b"\n") == 3 and relay.dropped == 904


def test_no_output_makes_no_file_and_the_first_output_makes_it(tmp_path):
    relay, write_fd = relay_to(tmp_path / "quiet", 8192, earlier=None)
    assert relay.pump() is False and not (tmp_path / "quiet").exists()  # nothing yet: no file yet
    os.close(write_fd)
    assert relay.pump() is True and relay.error == ""
    relay.close()
    assert not (tmp_path / "quiet").exists()
    relay, write_fd = relay_to(tmp_path / "said", 8192, earlier=None)
    pump_all(relay, write_fd, b"x" * 200_000)  # more than the first read: the rest is spliced after it
    assert (tmp_path / "said").read_bytes() == b"x" * 8192 + b"\n[lclusterd: stdout cut at 8.0 KiB (--max-log-size); the rest is dropped]\n"
    assert stat.S_IMODE((tmp_path / "said").stat().st_mode) == 0o600 and relay.dropped == 200_000 - 8192


def test_a_file_that_cannot_be_opened_drops_the_output_and_says_why(tmp_path):
    os.symlink(tmp_path / "elsewhere", tmp_path / "planted")
    relay, write_fd = relay_to(tmp_path / "planted", 8192, earlier=None)
    pump_all(relay, write_fd, b"secret\n" * 10)
    assert not (tmp_path / "elsewhere").exists() and relay.written == 0 and relay.dropped == 70
    assert relay.error == "stdout dropped: its log file cannot be opened (Too many levels of symbolic links)"
