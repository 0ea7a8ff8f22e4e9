"""The online image: does the ``online`` extra alone hold everything ``prescore serve`` imports, and does it serve?

``serve_imports`` walks the import statements reachable from the ``serve`` verb; ``lock_closure`` computes the
packages ``prescore[online]`` installs from ``uv.lock``; ``check_online_closure`` compares them.
``check_online_image_extras`` checks the Dockerfile's ``uv sync`` lines themselves, ``check_online_serving`` its
bind address, EXPOSE and HEALTHCHECK.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.deploy.commands import shell_commands
from tests.deploy.dockerfiles import Stage, exec_form, healthcheck_argv


def uv_sync_commands(stages: list[Stage]) -> list[tuple[int, list[str]]]:
    found = []
    for stage in stages:
        for ins in stage.instructions:
            if ins.keyword != "RUN":
                continue
            for words in shell_commands(ins.args):
                if words[:2] == ["uv", "sync"] or words[:3] == ["uv", "pip", "install"] or "pip" in words[:3]:
                    found.append((ins.line, words))
    return found


def _option_values(words: list[str], option: str) -> set[str]:
    values = {words[i + 1] for i, word in enumerate(words[:-1]) if word == option}
    return values | {word.split("=", 1)[1] for word in words if word.startswith(option + "=")}


def check_online_image_extras(dockerfile: str, stages: list[Stage], gpu_packages: Iterable[str] = ()) -> list[str]:
    """The online image installs from the lock file, without dev tools, with the ``online`` extra only, and
    leaves out (``--no-install-package``) the CUDA libraries the locked packages pull in on Linux
    (``gpu_packages``: xgboost loads NCCL only for multi-GPU training)."""
    problems = []
    syncs = uv_sync_commands(stages)
    if not syncs:
        problems.append(f"{dockerfile}: no `uv sync`")
    for line, words in syncs:
        where = f"{dockerfile}:{line}"
        if words[:2] != ["uv", "sync"]:
            problems.append(f"{where}: installs with {' '.join(words[:3])} instead of `uv sync --locked`")
            continue
        extras = _option_values(words, "--extra")
        if "--all-extras" in words:
            problems.append(f"{where}: --all-extras (the online image takes the `online` extra only)")
        elif extras != {"online"}:
            problems.append(f"{where}: extras {sorted(extras)} (the online image takes the `online` extra only)")
        for required in ("--locked", "--no-dev"):
            if required not in words:
                problems.append(f"{where}: `uv sync` without {required}")
        kept = set(gpu_packages) - _option_values(words, "--no-install-package")
        if kept:
            problems.append(f"{where}: installs the CUDA libraries {sorted(kept)} (leave them out with "
                            "--no-install-package)")  # fmt: skip
    return problems


def check_project_rebuilt(dockerfile: str, stages: list[Stage], project: str = "prescore") -> list[str]:
    """Every ``uv sync`` that installs the project itself rebuilds it (``--reinstall-package <project>``): uv
    keeps a built wheel of a local project in its cache (a cache mount here) until pyproject.toml changes, so
    without it an image would ship the code of an earlier build."""
    problems = []
    for line, words in uv_sync_commands(stages):
        installs = words[:2] == ["uv", "sync"] and "--no-install-project" not in words
        if installs and project not in _option_values(words, "--reinstall-package"):
            problems.append(f"{dockerfile}:{line}: `uv sync` installs {project} from uv's cache without "
                            f"--reinstall-package {project}: the image may ship stale code")  # fmt: skip
    return problems


def lock_closure(lock: Mapping[str, Any], root: str, extras: Iterable[str]) -> set[str]:
    """Names of every package ``root`` with ``extras`` installs from a uv.lock (markers ignored: a superset)."""
    packages = {p["name"]: p for p in lock["package"]}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(root, tuple(extras))]
    while todo:
        name, wanted = todo.pop()
        package = packages[name]
        deps = list(package.get("dependencies", []))
        for extra in wanted:
            deps += package.get("optional-dependencies", {}).get(extra, [])
        for dep in deps:
            key = dep["name"]
            dep_extras = tuple(dep.get("extra", []))
            if (key, dep_extras) in seen or key not in packages:
                continue
            seen.add((key, dep_extras))
            todo.append((key, dep_extras))
    return {name for name, _ in seen}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST, top_level_only: bool) -> list[tuple[str, list[str]]]:
    """(module, imported names) of the import statements of a module, outside ``if TYPE_CHECKING:``."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, []) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, [alias.name for alias in child.names]))
            elif top_level_only and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            else:
                visit(child)

    visit(tree)
    return found


def serve_imports(repo: Path, app_module: str, packages: tuple[str, ...] = ("jobs", "online", "warehouse")) -> set[str]:
    """Top-level names of the third-party modules ``prescore serve`` can import.

    From ``jobs/cli.py`` only its module level and the body of its ``serve`` verb (the other verbs import their
    own modules lazily), plus ``app_module``, which uvicorn imports by name; every first-party module reached
    from there is followed entirely, function bodies included.
    """
    cli = ast.parse((repo / "jobs" / "cli.py").read_text())
    serve_fn = next(n for n in cli.body if isinstance(n, ast.FunctionDef) and n.name == "serve")
    pending = _imports(cli, top_level_only=True) + _imports(serve_fn, top_level_only=False) + [(app_module, [])]
    seen_modules: set[str] = set()
    third_party: set[str] = set()
    while pending:
        module, names = pending.pop()
        top = module.split(".")[0]
        if top == "__future__" or top in sys.stdlib_module_names:
            continue
        if top not in packages:
            third_party.add(top)
            continue
        for candidate in [module, *(f"{module}.{n}" for n in names)]:
            path = repo / Path(*candidate.split("."))
            source = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
            if candidate in seen_modules or not source.is_file():
                continue
            seen_modules.add(candidate)
            pending += _imports(ast.parse(source.read_text()), top_level_only=False)
    return third_party


def normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def check_online_closure(
    modules: set[str],
    closure: set[str],
    distributions: Callable[[str], list[str]],
    optional: Mapping[str, str],
    forbidden: Iterable[str] = ("dask", "distributed", "apache-airflow", "apache-airflow-core"),
) -> list[str]:
    """Every module ``prescore serve`` imports comes with the online extra (``closure``), and the online extra
    pulls in neither Dask nor Airflow. ``optional`` names modules that serve imports only in a configuration
    the image does not use (with the reason); ``distributions`` maps a module name to the packages providing it.
    """
    problems = []
    for module in sorted(modules):
        if module in optional:
            continue
        dists = {normalise(d) for d in distributions(module)}
        if not dists:
            problems.append(f"`prescore serve` imports {module}, which no installed distribution provides")
        elif not dists & closure:
            problems.append(f"`prescore serve` imports {module} ({', '.join(sorted(dists))}): not in the online extra")
    for name in forbidden:
        if name in closure:
            problems.append(f"the online extra installs {name}")
    return problems


def check_online_serving(dockerfile: str, stages: list[Stage]) -> list[str]:
    """The online image serves on all of the container's interfaces, EXPOSEs that port, and its HEALTHCHECK
    asks that port's ``/healthz`` (liveness: ``/readyz`` fails until a model is published)."""
    final = stages[-1]
    cmd = final.last("CMD")
    argv = exec_form(cmd.args) if cmd else None
    if not argv or argv[:2] != ["prescore", "serve"]:
        return [f"{dockerfile}: CMD is not `prescore serve` in exec form"]
    options = dict(zip(argv[2::2], argv[3::2], strict=False))
    host, port = options.get("--host", "127.0.0.1"), options.get("--port", "8000")
    problems = []
    if host != "0.0.0.0":
        problems.append(f"{dockerfile}: serves on {host}; only 0.0.0.0 is reachable through a published port")
    exposed = {word.split("/")[0] for ins in final.instructions if ins.keyword == "EXPOSE" for word in ins.args.split()}
    if port not in exposed:
        problems.append(f"{dockerfile}: EXPOSE {port} is missing (exposed: {sorted(exposed)})")
    check = final.last("HEALTHCHECK")
    probe = " ".join(healthcheck_argv(check) or []) if check else ""
    if f"127.0.0.1:{port}/healthz" not in probe:
        problems.append(f"{dockerfile}: HEALTHCHECK does not ask http://127.0.0.1:{port}/healthz")
    return problems
