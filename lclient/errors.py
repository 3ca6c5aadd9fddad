"""What can go wrong for a client, each with the exit status lclient uses for it.

Exit statuses: 0 ok; 1 the job failed or does not exist; 2 usage or invalid input;
3 lclusterd (or etcd behind it) unreachable or unavailable; 4 refused: the caller is not
known (no or a bad certificate, not in the group lclusterd) or the request is not theirs to
make (another user's job, an admin-only action); 124 -wait timed out.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOB = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_REFUSED = 4
EXIT_TIMEOUT = 124
EXIT_NOT_RUN = 127  # -exec: the command could not be run in the job (not found there, say), as a shell says
EXIT_INTERRUPTED = 130  # Ctrl-C


class ClientError(Exception):
    exit_code = EXIT_JOB


class InvalidRequest(ClientError):
    """Bad input: malformed uuid, empty command, bad limit value."""

    exit_code = EXIT_USAGE


class NotFound(ClientError):
    exit_code = EXIT_JOB


class NotPossible(ClientError):
    """The job's state does not allow it (kill of a finished job)."""

    exit_code = EXIT_JOB


class ServerUnreachable(ClientError):
    exit_code = EXIT_UNAVAILABLE


class Unavailable(ClientError):
    """The daemon answered but cannot serve now (etcd unreachable behind it)."""

    exit_code = EXIT_UNAVAILABLE


class Refused(ClientError):
    """UNAUTHENTICATED, PERMISSION_DENIED, or a TLS handshake the node refused."""

    exit_code = EXIT_REFUSED


class WaitTimeout(ClientError):
    exit_code = EXIT_TIMEOUT


class ServerError(ClientError):
    exit_code = EXIT_UNAVAILABLE
