"""Run a function as another user, to test what a home written by one uid looks like to another.

As root, ``as_other_user`` forks and the child switches to uid/gid 65534 (``nobody``) before calling the function
(no new process: the interpreter may live where that user cannot execute it); the result comes back as JSON over a
pipe. As any other user the function runs here: the caller makes its files unreadable or unwritable with chmod,
which binds a non-root user. Run the same work once before (as this user): the child may not be able to read the
interpreter's own library to import anything new, and it should start no thread pool after the fork.
``shared_dir`` is a directory under /tmp that the other user can reach (pytest's tmp_path is private to root).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OTHER_UID = 65534
IS_ROOT = os.geteuid() == 0


@contextmanager
def shared_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="prescore-shared-", dir="/tmp"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_other_user(fn: Callable[[], Any]) -> Any:
    if not IS_ROOT:
        return fn()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read)
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            payload = json.dumps({"value": fn()})
        except BaseException as exc:
            payload, code = json.dumps({"error": f"{type(exc).__name__}: {exc}"}), 1
        with os.fdopen(write, "w") as out:
            out.write(payload)
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = json.loads(pipe.read() or '{"error": "no answer"}')
    os.waitpid(pid, 0)
    if "error" in answer:
        raise AssertionError(f"as uid {OTHER_UID}: {answer['error']}")
    return answer["value"]
