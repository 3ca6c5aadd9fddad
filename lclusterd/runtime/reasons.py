"""The fork server's one-line reasons, and clean-up that never hides the cause of a failure
(docs/conventions.md, "Errors")."""

from __future__ import annotations

import os
from typing import Callable

from lclusterd.errors import LclusterdError


def describe(error: BaseException) -> str:
    """A one-line reason: OSErrors without the "[Errno N]" prefix, with the file named."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return str(error) or type(error).__name__


def reason(error: BaseException) -> str:
    return str(error) if isinstance(error, LclusterdError) else describe(error)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    del fds[:]


def note_cleanup(error: BaseException, cleanup: Callable[[], object]) -> None:
    """Run a cleanup step; its failure is added to the error as a note, never replaces it."""
    try:
        cleanup()
    except OSError as cleanup_error:
        error.add_note(f"cleanup also failed: {describe(cleanup_error)}")
