"""xgboost, imported without its scikit-learn integration: every prescore process gets xgboost through ``xgboost()``.

``import xgboost`` imports scikit-learn (and through it most of SciPy) whenever scikit-learn is installed — 2-3 s of
a command's start on a small machine, paid by every scoring task and CLI call, although prescore never uses
xgboost's scikit-learn estimators (it loads, predicts with and trains ``Booster`` objects only). ``xgboost()``
imports xgboost with scikit-learn hidden for the duration of that import (``sys.modules["sklearn"] = None``:
xgboost then takes its own "scikit-learn not installed" path), then unhides it, so a later ``import sklearn``
(MLflow's) works as usual. In such a process ``xgboost.XGBClassifier`` and friends are xgboost's stand-ins and
refuse to be built; code that needs them imports scikit-learn before xgboost. SciPy's sparse module stays: xgboost
needs it.
"""

from __future__ import annotations

import sys
from types import ModuleType

_HIDDEN = "sklearn"


def xgboost() -> ModuleType:
    """The ``xgboost`` module (imported once per process, without scikit-learn when this is the first import)."""
    loaded = sys.modules.get("xgboost")
    if loaded is not None:
        return loaded
    hide = _HIDDEN not in sys.modules
    if hide:
        sys.modules[_HIDDEN] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import xgboost
    finally:
        if hide and sys.modules.get(_HIDDEN, 0) is None:
            del sys.modules[_HIDDEN]
    return xgboost
