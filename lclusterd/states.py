"""The names of a job's states, and of the ways one run of it ends. Pure.

The runtime reports how a run ended with one of RUN_ENDINGS; the control plane records a
job's life with STATES, of which the run endings are the terminal states a node writes.
"""

from __future__ import annotations

QUEUED = "QUEUED"
ASSIGNED = "ASSIGNED"
RUNNING = "RUNNING"
EXITED = "EXITED"
KILLED = "KILLED"
OOM_KILLED = "OOM_KILLED"
TIMED_OUT = "TIMED_OUT"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
LOST = "LOST"

STATES = (QUEUED, ASSIGNED, RUNNING, EXITED, KILLED, OOM_KILLED, TIMED_OUT, FAILED, CANCELLED, LOST)
RUN_ENDINGS = (EXITED, KILLED, OOM_KILLED, TIMED_OUT, FAILED)
TERMINAL = frozenset({*RUN_ENDINGS, CANCELLED, LOST})
