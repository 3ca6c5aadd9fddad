"""`lclient`'s entry point. The plain forms a script repeats, `-check UUID`, `-add CMD`,
`-kill UUID` and `-wait UUID` and nothing else, run without click: importing it (and the
typing, inspect and enum it brings) is about a quarter of such a call's time (README
"lclient's start-up"). Every other command line, and every plain form's help or error,
goes through the click command (lclient/cli.py), which defines what the options mean; the
plain forms are the same actions with every other option at its default."""

from __future__ import annotations

import sys

PLAIN = {"-check": "check", "--check": "check", "-add": "add", "--add": "add", "-kill": "kill", "--kill": "kill",
         "-wait": "wait", "--wait": "wait"}


def plain_form(argv: list[str]) -> tuple[str, str] | None:
    """(action, value) when `argv` is one plain form, else None. A value that starts with "-"
    (an option, `-add -`'s stdin, a command like `-x`) goes to click, which decides."""
    if len(argv) != 2 or argv[0] not in PLAIN or argv[1].startswith("-"):
        return None
    return "-" + PLAIN[argv[0]], argv[1]


def run_plain(action: str, value: str, client_factory=None) -> int:
    """What the click command does with these two arguments, without click."""
    from lclient.actions import DEFAULTS, guarded, perform

    options = {**DEFAULTS, action[1:]: value}
    return guarded(lambda: perform(action, options, client_factory), debug=False)


def main() -> None:
    argv = sys.argv[1:]
    plain = plain_form(argv)
    if plain is not None:
        sys.exit(run_plain(*plain))
    from lclient.cli import run

    sys.exit(run(argv))


if __name__ == "__main__":
    main()
