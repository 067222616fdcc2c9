"""Every Django command the Procfile runs (what `make run` starts) accepts its arguments: a
wrong option only shows when the process starts and exits in a loop under `supervise`."""

import re
import shlex

import pytest
from django.core.management import get_commands, load_command_class

from tests.helpers import ROOT


def procfile_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, command = line.split(":", 1)
        command = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", command)  # the shell's ${VAR:-default}
        for part in command.split("&&"):
            words = shlex.split(part)
            if words[:2] != ["python", "manage.py"]:
                continue
            words = words[2:]
            if words[0] == "supervise":
                words = words[1:]
            commands.append((f"{name}: {words[0]}", words))
    return commands


@pytest.mark.parametrize(("process", "words"), procfile_commands(), ids=[p for p, _ in procfile_commands()])
def test_each_procfile_command_accepts_its_arguments(process, words):
    name, *arguments = words
    command = load_command_class(get_commands()[name], name)
    command.create_parser("manage.py", name).parse_args(arguments)  # SystemExit(2) on a wrong option
