"""``lazy_module``: a module imported on first use, so that importing what needs it only on some paths costs nothing
on the others. The online reader imports ``warehouse.store`` but never builds an Arrow array: with pyarrow imported
lazily there, the online image does not carry pyarrow (about 150 MB) at all.

Use it as ``if TYPE_CHECKING: import pyarrow as pa`` / ``else: pa = lazy_module("pyarrow")``: type checkers see the
module, and at run time the first attribute read imports it (``ImportError`` then, naming what to install).
"""

from __future__ import annotations

import importlib
from typing import Any


class _LazyModule:
    __slots__ = ("_install", "_module", "_name")

    def __init__(self, name: str, install: str) -> None:
        self._name, self._install, self._module = name, install, None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            try:
                module = importlib.import_module(self._name)
            except ImportError as exc:
                raise ImportError(f"{self._name} is needed here but not installed: {self._install}") from exc
            object.__setattr__(self, "_module", module)
        return getattr(module, attr)


def lazy_module(name: str, install: str = "install prescore with the batch extra (uv sync --extra batch)") -> Any:
    """``name`` imported at its first attribute read (see the module docstring)."""
    return _LazyModule(name, install)
