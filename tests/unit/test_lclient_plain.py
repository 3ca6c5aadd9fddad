"""The plain forms (`-check UUID`, `-add CMD`, `-kill UUID`, `-wait UUID`) run without click
(lclient/main.py) and must do exactly what the click command does with the same arguments:
same calls, same output, same exit status, for successes and failures alike."""

from __future__ import annotations

import pytest

from lclient import actions, cli, errors, main
from lclusterd.rpc import lclusterd_pb2 as pb
from test_lclient_cli import JOB, FakeClient

FAILED = pb.Job(id=JOB, state="FAILED", error="exec: not found", node="n1", spec=pb.JobSpec(command="nope"))


def outcome(runner, argv, capsys, **fake):
    made = []

    def factory(target):
        made.append(FakeClient(target.server, **fake))
        return made[-1]

    code = runner(argv, factory)
    out, err = capsys.readouterr()
    return code, out, err, [call[0] for client in made for call in client.calls]


def by_click(argv, factory):
    return cli.run(argv, factory)


def plain(argv, factory):
    form = main.plain_form(argv)
    assert form is not None, argv
    return main.run_plain(*form, client_factory=factory)


@pytest.mark.parametrize("argv", [["-check", JOB], ["--check", JOB], ["-add", "echo hi"], ["--add", "true"],
                                  ["-kill", JOB], ["-wait", JOB], ["-add", ""], ["-check", "not-a-uuid"]])
@pytest.mark.parametrize("fake", [{}, {"job": FAILED}, {"fail": errors.NotFound("job x not found")},
                                  {"fail": errors.ServerUnreachable("cannot reach lclusterd at x")},
                                  {"fail": RuntimeError("boom")}, {"fail": KeyboardInterrupt()}])
def test_a_plain_form_does_what_the_click_command_does(argv, fake, capsys):
    assert outcome(plain, argv, capsys, **fake) == outcome(by_click, argv, capsys, **fake)


@pytest.mark.parametrize("argv", [[], ["-h"], ["-check"], ["-list"], ["-check", JOB, "-json"], ["-add", "-"],
                                  ["-add", "-x"], ["-check", "-kill"], ["-add=true"], ["-logs", JOB], ["-nodes", "x"],
                                  ["-debug", JOB], ["check", JOB]])
def test_anything_else_goes_to_click(argv):
    assert main.plain_form(argv) is None


def test_the_defaults_are_the_click_commands():
    """actions.DEFAULTS stands for click's parse of every option not given: one key per option."""
    parsed = cli.cli.make_context("lclient", ["-check", JOB]).params
    assert {**parsed, "check": None} == actions.DEFAULTS

