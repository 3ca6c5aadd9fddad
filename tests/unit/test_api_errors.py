"""Each lclusterd error maps to one gRPC status code."""

import grpc
import pytest

from lclusterd.api.errors import status_of
from lclusterd.errors import (InvalidSpec, InvalidTransition, JobFinished, JobNotFound, JobRemoved, LclusterdError,
                              RuntimeUnavailable, StoreUnavailable, TooBusy, WaitTimedOut)


@pytest.mark.parametrize("error, code", [
    (InvalidSpec("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (JobNotFound("a"), grpc.StatusCode.NOT_FOUND),
    (JobRemoved("a", 1.0, 2.0, "7d"), grpc.StatusCode.NOT_FOUND),
    (StoreUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (RuntimeUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (TooBusy("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (JobFinished("a", "EXITED"), grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidTransition("A", "B"), grpc.StatusCode.FAILED_PRECONDITION),
    (WaitTimedOut("a", "RUNNING", 1), grpc.StatusCode.DEADLINE_EXCEEDED),
    (LclusterdError("x"), grpc.StatusCode.INTERNAL),
])
def test_status_of(error, code):
    assert status_of(error) == code


def test_messages_are_sentences():
    assert str(JobNotFound("abc")) == "no job with uuid abc"
    assert str(JobFinished("abc", "KILLED")) == "job abc has already finished (KILLED)"
    assert str(WaitTimedOut("abc", "RUNNING", 0.5)) == "job abc is still RUNNING after 0.5s"
