"""Every canary command's --help, and each subcommand's, prints its help.

argparse %-formats help strings: a bare ``%`` (as in "above 80%") crashes
``--help`` with ValueError, so each one is rendered for real here.
"""

from __future__ import annotations

import argparse

import pytest
from django.core.management import ManagementUtility, load_command_class

COMMANDS = ["merchants", "rollout", "simulate", "demo", "checktemplate"]


def _subcommands(name: str) -> list[list[str]]:
    parser = load_command_class("canary", name).create_parser("manage.py", name)
    argvs: list[list[str]] = [[]]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            argvs += [[sub] for sub in action.choices]
    return argvs


CASES = [(name, argv) for name in COMMANDS for argv in _subcommands(name)]


@pytest.mark.parametrize("name, argv", CASES, ids=[" ".join([n, *a]) for n, a in CASES])
def test_canary_command_help__each_subcommand__usage_printed_exit_0(name, argv, capsys):
    # When
    with pytest.raises(SystemExit) as exited:
        ManagementUtility(["manage.py", name, *argv, "--help"]).execute()
    # Then
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert f"manage.py {' '.join([name, *argv])}" in out
    assert "show this help message and exit" in out
