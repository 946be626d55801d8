"""Every ``qoe`` command's ``--help``, walked through the parser itself: each option says what
it does and what it is when not given, and nothing internal shows.

The walk reads argparse's own structures (``_actions``, the subcommands' listed choices),
since argparse has no public way to enumerate them; one run of the real command checks
what a user sees.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from qoe.cli import build_parser
from qoe.cli.common import quiet_default

HIDDEN = {"qoe fleet worker"}
"""Internal commands: run by qoe itself, listed nowhere in --help."""


def commands(
    parser: argparse.ArgumentParser, name: str = "qoe"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``(command line, parser)`` for ``qoe`` and every subcommand under it, hidden ones too."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from commands(sub, f"{name} {sub_name}")


def listed(parser: argparse.ArgumentParser) -> set[str]:
    """The subcommands ``parser --help`` lists."""
    return {
        choice.dest
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._get_subactions()
    }


ALL = dict(commands(build_parser()))
PUBLIC = {name: parser for name, parser in ALL.items() if name not in HIDDEN}


def test_hidden_commands_are_exactly_the_internal_ones() -> None:
    hidden = {
        f"{name} {sub}"
        for name, parser in ALL.items()
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for sub in action.choices
        if sub not in listed(parser)
    }
    assert hidden == HIDDEN


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_help_explains_every_option_and_its_default(name: str) -> None:
    parser = PUBLIC[name]
    text = parser.format_help()
    assert "==SUPPRESS==" not in text
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:  # a hidden option: not even in the usage line
            for option in action.option_strings:
                assert not re.search(rf"{re.escape(option)}(?![\w-])", text), option
            continue
        what = "/".join(action.option_strings) or action.metavar or action.dest
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._get_subactions():
                assert choice.help and choice.help.strip(), f"{name} {choice.dest}: no help"
            continue
        assert action.help and action.help.strip(), f"{name} {what}: no help"
        if not quiet_default(action.default):
            default = action.default
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            help_text = " ".join(formatter._expand_help(action).split())
            assert f"(default {shown}" in help_text, f"{name} {what}: default {shown} not in {help_text!r}"


def test_fleet_help_lists_no_internal_command(cli) -> None:
    done = cli("fleet", "--help")
    assert done.returncode == 0
    assert "worker" not in done.stdout
    assert "SUPPRESS" not in done.stdout
    for action in ("check", "run", "report"):
        assert re.search(rf"^\s+{action}\s", done.stdout, re.MULTILINE), action
