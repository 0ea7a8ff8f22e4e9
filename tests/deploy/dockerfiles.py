"""Dockerfile and ``.dockerignore`` parsing, and the checks of ``docker/*.Dockerfile``.

Each ``check_*`` function takes parsed data and returns a list of problems (empty: nothing wrong), each naming
the file, line and what is wrong, so a test asserts ``== []`` on the real files and a negative test feeds the
same function a bad snippet. The parser understands the Dockerfile syntax the files in ``docker/`` use:
comments, ``\\`` continuations, ``--flag=value`` options, exec-form (JSON) commands.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.commands import EntryPoints, command_problems, is_server


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    flags: tuple[tuple[str, str], ...]  # leading --name=value options, in order (RUN --mount may repeat)
    args: str  # the rest of the instruction, continuation lines joined
    line: int

    def flag(self, name: str) -> str | None:
        return next((value for key, value in self.flags if key == name), None)


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def last(self, keyword: str) -> Instruction | None:
        found = [i for i in self.instructions if i.keyword == keyword]
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: comments dropped, ``\\`` continuations joined, leading ``--flags`` split off."""
    stages: list[Stage] = []
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # a comment inside a continued instruction is dropped, as docker does
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append((start, buffer + stripped))
        buffer = ""
    if buffer:
        logical.append((start, buffer))
    for number, line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: list[tuple[str, str]] = []
        rest = rest.strip()
        while rest.startswith("--"):
            token, _, rest = rest.partition(" ")
            name, _, value = token[2:].partition("=")
            flags.append((name, value))
            rest = rest.strip()
        instruction = Instruction(keyword, tuple(flags), rest, number)
        if keyword == "FROM":
            words = rest.split()
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], alias, number))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"line {number}: {keyword} before the first FROM")
        else:
            stages[-1].instructions.append(instruction)
    return stages


def exec_form(args: str) -> list[str] | None:
    """The argv of an exec-form (JSON array) CMD/ENTRYPOINT/HEALTHCHECK CMD; None for the shell form."""
    if not args.lstrip().startswith("["):
        return None
    value = json.loads(args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not a JSON array of strings: {args}")
    return value


def healthcheck_argv(instruction: Instruction) -> list[str] | None:
    """The command of ``HEALTHCHECK [flags] CMD [...]``; None for ``HEALTHCHECK NONE`` or the shell form."""
    keyword, _, rest = instruction.args.partition(" ")
    if keyword.upper() != "CMD":
        return None
    return exec_form(rest)


def image_argv(stages: list[Stage]) -> list[str]:
    """ENTRYPOINT + CMD of the final stage (exec form), as the container runs it by default."""
    final = stages[-1]
    argv: list[str] = []
    for keyword in ("ENTRYPOINT", "CMD"):
        instruction = final.last(keyword)
        if instruction is not None:
            argv += exec_form(instruction.args) or shlex.split(instruction.args)
    return argv


def has_healthcheck(stages: list[Stage]) -> bool:
    check = stages[-1].last("HEALTHCHECK")
    return check is not None and not check.args.upper().startswith("NONE")


# ---- .dockerignore -----------------------------------------------------------------------------------------


def parse_dockerignore(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` (relative to the build context) is left out of the context: a pattern matching the path
    or one of its parent directories excludes it; a later ``!pattern`` includes it again."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _ignore_regex(pattern[1:] if negate else pattern)
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


# Paths that must never reach a build context: environments, local warehouses, VCS data, caches, results.
MUST_IGNORE = (
    ".venv/bin/python",
    ".prescore/catalog.db",
    ".git/HEAD",
    "bench/results/online.json",
    "jobs/__pycache__/cli.cpython-311.pyc",
    ".mypy_cache/3.11/cache.db",
    ".ruff_cache/CACHEDIR.TAG",
    ".pytest_cache/README.md",
)


def check_dockerignore(patterns: list[str]) -> list[str]:
    """The ignore file keeps the virtualenv, PRESCORE_HOME, .git, caches and benchmark results out."""
    return [f".dockerignore: {path} would be sent to the build" for path in MUST_IGNORE
            if not dockerignored(path, patterns)]  # fmt: skip


def check_copy_sources(dockerfile: str, stages: list[Stage], context: Path, ignore: list[str]) -> list[str]:
    """Every COPY/ADD source from the build context exists there and is not excluded by ``.dockerignore``."""
    problems = []
    for stage in stages:
        for ins in stage.instructions:
            if ins.keyword not in ("COPY", "ADD") or ins.flag("from") is not None:
                continue
            words = exec_form(ins.args) or shlex.split(ins.args)
            if len(words) < 2:
                problems.append(f"{dockerfile}:{ins.line}: {ins.keyword} needs a source and a destination")
                continue
            for source in words[:-1]:
                if "://" in source:
                    problems.append(f"{dockerfile}:{ins.line}: {ins.keyword} of a URL ({source}) is not pinned")
                    continue
                matches = sorted(context.glob(source.rstrip("/"))) if source.rstrip("/") else [context]
                if not matches:
                    problems.append(f"{dockerfile}:{ins.line}: COPY source {source} does not exist in the context")
                for match in matches:
                    rel = match.relative_to(context).as_posix()
                    if dockerignored(rel, ignore):
                        problems.append(f"{dockerfile}:{ins.line}: COPY source {rel} is excluded by .dockerignore")
    return problems


# ---- image references ------------------------------------------------------------------------------------

# Images whose upstream versions have two components (PostgreSQL 17.6): anything else needs major.minor.patch.
TWO_PART_VERSIONED = frozenset({"postgres"})
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def split_image(ref: str) -> tuple[str, str | None]:
    """(repository, tag) of an image reference; the tag is None when absent (a digest is kept in the tag)."""
    name, at, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
    else:
        repo, tag = name, None
    return repo, (tag or "") + at + digest if (tag or at) else None


def image_pin_problem(ref: str) -> str | None:
    """None when the reference names one immutable version: a digest, or an exact version tag (not latest)."""
    if "$" in ref:
        return f"{ref}: a variable image reference is not pinned"
    if _DIGEST.search(ref):
        return None
    repo, tag = split_image(ref)
    if tag is None or tag == "latest":
        return f"{ref}: no version tag (an implicit or explicit `latest` moves)"
    parts = 2 if repo.rsplit("/", 1)[-1] in TWO_PART_VERSIONED else 3
    if not re.match(r"v?\d+" + r"\.\d+" * (parts - 1) + r"(?![.\d])", tag):
        return f"{ref}: tag {tag!r} is not an exact version ({parts} numeric components) or a digest"
    return None


def check_dockerfile_images(dockerfile: str, stages: list[Stage]) -> list[str]:
    """Every base image (FROM) and every ``COPY --from`` image is pinned; earlier stages may be named freely."""
    problems = []
    known: set[str] = set()
    for stage in stages:
        if stage.base not in known and (problem := image_pin_problem(stage.base)):
            problems.append(f"{dockerfile}:{stage.line}: FROM {problem}")
        if stage.name:
            known.add(stage.name)
        for ins in stage.instructions:
            source = ins.flag("from")
            if source is None or source in known or source.isdigit():
                continue
            if problem := image_pin_problem(source):
                problems.append(f"{dockerfile}:{ins.line}: COPY --from {problem}")
    return problems


def check_dockerfile_runtime(dockerfile: str, stages: list[Stage], entry: EntryPoints) -> list[str]:
    """The final stage runs as a non-root USER, in exec form (PID 1 gets SIGTERM), a real entry point, and
    has a HEALTHCHECK when its default command is a server."""
    problems = []
    final = stages[-1]
    user = final.last("USER")
    if user is None or user.args.split(":")[0] in ("root", "0"):
        problems.append(f"{dockerfile}: the final stage runs as root (add a non-root USER)")
    for keyword in ("ENTRYPOINT", "CMD"):
        ins = final.last(keyword)
        if ins is not None and exec_form(ins.args) is None:
            problems.append(f"{dockerfile}:{ins.line}: {keyword} in shell form (use a JSON array: PID 1 gets SIGTERM)")
    check = final.last("HEALTHCHECK")
    if check is not None and not check.args.upper().startswith("NONE") and healthcheck_argv(check) is None:
        problems.append(f"{dockerfile}:{check.line}: HEALTHCHECK CMD in shell form (use a JSON array)")
    argv = image_argv(stages)
    if not argv:
        problems.append(f"{dockerfile}: no CMD or ENTRYPOINT")
        return problems
    problems += [f"{dockerfile}: CMD {p}" for p in command_problems(argv, entry)]
    if is_server(argv) and not has_healthcheck(stages):
        problems.append(f"{dockerfile}: runs a server ({' '.join(argv[:3])}) without a HEALTHCHECK")
    return problems
