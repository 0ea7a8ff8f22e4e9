"""What a container may run: ``prescore`` verbs, known ``airflow`` subcommands, ``dask`` commands.

``command_problems`` checks one argv (``sh -c`` scripts command by command); ``prescore`` verbs and ``dask``
commands are parsed with their real option parsers when available, so an unknown option is a problem too.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# `airflow` subcommands the stack may run (Airflow 3.3); a nested set lists the accepted second words.
# `standalone` is left out on purpose: its log servers bind 0.0.0.0 on the host.
AIRFLOW_COMMANDS: dict[str, frozenset[str] | None] = {
    "api-server": None,
    "scheduler": None,
    "dag-processor": None,
    "triggerer": None,
    "version": None,
    "info": None,
    "db": frozenset({"migrate", "check", "check-migrations", "reset", "downgrade", "clean", "shell"}),
    "pools": frozenset({"set", "get", "list", "delete", "import", "export"}),
    "jobs": frozenset({"check"}),
    "dags": frozenset({"list", "list-import-errors", "reserialize", "trigger", "pause", "unpause", "test"}),
    "connections": frozenset({"add", "get", "list", "delete", "import", "export"}),
    "variables": frozenset({"set", "get", "list", "delete", "import", "export"}),
    "config": frozenset({"get-value", "list", "lint"}),
}
DASK_COMMANDS = (("scheduler",), ("worker",), ("cuda", "worker"))
SERVER_COMMANDS = (
    ("prescore", "serve"),
    ("airflow", "api-server"),
    ("airflow", "scheduler"),
    ("airflow", "dag-processor"),
    ("airflow", "triggerer"),
    ("dask", "scheduler"),
    ("dask", "worker"),
    ("dask", "cuda", "worker"),
)
SHELLS = frozenset({"sh", "bash", "/bin/sh", "/bin/bash"})


@dataclass(frozen=True)
class EntryPoints:
    """What a command line may start: ``prescore`` verbs (a click group) and option parsers for dask commands.

    ``prescore`` and ``dask`` commands are parsed with their real option parsers (unknown options and missing
    required ones are problems) when available; ``parsers`` maps ``("dask", "worker")`` to such a parser.
    """

    prescore: Any
    parsers: Mapping[tuple[str, ...], Any] = field(default_factory=dict)


def _parse_with(command: Any, name: str, args: list[str]) -> str | None:
    try:
        command.make_context(name, list(args))
    except Exception as exc:  # click/typer usage errors; each has a one-line message
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return f"{name}: {message}"
    return None


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a ``sh -c`` script joined by ``&&``, ``||``, ``;`` or ``|``."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def command_problems(argv: list[str], entry: EntryPoints) -> list[str]:
    """Problems with the program a container runs: a ``prescore`` verb that exists (with valid options), an
    ``airflow`` subcommand from the known list, ``dask scheduler|worker|cuda worker``; ``sh -c`` scripts are
    checked command by command."""
    if not argv:
        return ["empty command"]
    if argv[0] in SHELLS and len(argv) >= 3 and argv[1] == "-c":
        problems = []
        for words in shell_commands(argv[2]):
            problems += command_problems(words[1:] if words[0] == "exec" else words, entry)
        return problems
    program, args = argv[0], argv[1:]
    if program == "prescore":
        if not args:
            return ["prescore: no verb"]
        verb = args[0]
        if args == ["--help"]:
            return []
        if verb not in entry.prescore.commands:
            return [f"prescore: no verb {verb!r} (verbs: {', '.join(sorted(entry.prescore.commands))})"]
        problem = _parse_with(entry.prescore.commands[verb], f"prescore {verb}", args[1:])
        return [problem] if problem else []
    if program == "airflow":
        sub = args[0] if args else ""
        if sub not in AIRFLOW_COMMANDS:
            return [f"airflow: {sub!r} is not one of the known subcommands ({', '.join(sorted(AIRFLOW_COMMANDS))})"]
        second = AIRFLOW_COMMANDS[sub]
        if second is not None and (len(args) < 2 or args[1] not in second):
            return [f"airflow {sub}: expected one of {', '.join(sorted(second))}"]
        return []
    if program == "dask":
        for command in DASK_COMMANDS:
            if tuple(args[: len(command)]) == command:
                parser = entry.parsers.get(("dask", *command))
                if parser is None:
                    return []
                problem = _parse_with(parser, " ".join(("dask", *command)), args[len(command) :])
                return [problem] if problem else []
        return [f"dask: {' '.join(args[:2])!r} is not scheduler, worker or cuda worker"]
    return [f"{program!r} is not a prescore, airflow or dask entry point"]


def is_server(argv: list[str]) -> bool:
    if argv and argv[0] in SHELLS and len(argv) >= 3 and argv[1] == "-c":
        return any(is_server(words) for words in shell_commands(argv[2]))
    return any(tuple(argv[: len(words)]) == words for words in SERVER_COMMANDS)


def as_argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
