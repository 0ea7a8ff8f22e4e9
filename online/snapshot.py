"""The models one service answers for: one load of the models file with each model's fallback (or why it has none)
and the route of its rollout (``online.rollout``).

A ``Snapshot`` is immutable: the service swaps the whole of it on ``POST /v1/admin/reload``. ``load_snapshot`` does
blocking I/O (the models file, the registry, warming each fallback); the service calls it off the event loop. A
rollout naming a version the registry does not hold as a challenger (nor as production) is a problem, like a
corrupted fallback: the snapshot is not served.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

from online import rollout
from online.fallback import FallbackModel, load_fallback
from online.policy import policy_version, threshold_cuts
from online.settings import OnlineSettings
from warehouse.datasets import storage
from warehouse.errors import RegistryError, StoreError
from warehouse.model_config import ModelSpec, load_config
from warehouse.registry import Registry
from warehouse.store import Route, validate_name

log = logging.getLogger("prescore.online")


@dataclass(frozen=True)
class ModelRuntime:
    """What answering for one model needs: its spec, policy id, fallback model (or why there is none)."""

    name: str
    spec: ModelSpec
    policy_version: str
    fallback: FallbackModel | None
    fallback_note: str
    bounds: dict[str, tuple[float, float]]  # fallback feature → contract range
    cuts: tuple[tuple[str, float], ...]  # threshold labels, highest first; () → no ``decision`` field
    flags: frozenset[str] = frozenset()  # bool fallback features: JSON true/false (or 0/1) accepted
    # category fallback features: value → code (the fallback version's order); ``reject``: unknown values are a 422
    codes: dict[str, dict[str, float]] = field(default_factory=dict)
    reject: frozenset[str] = frozenset()
    route: Route | None = None  # the rollout the score reader follows (None: the champion only)


@dataclass(frozen=True)
class Snapshot:
    """Every model of one load of the models file; ``problems`` non-empty → not ready (e.g. corrupted artifact)."""

    models: dict[str, ModelRuntime]
    problems: list[str] = field(default_factory=list)


def load_snapshot(settings: OnlineSettings) -> Snapshot:
    """Load + validate the models file (``ConfigError``), load, hash-check and warm every production fallback.

    A missing production fallback only removes that model's fallback rung; a corrupted or unusable one is a
    problem that keeps the app from becoming ready (the details go to the log, not to clients).
    """
    config = load_config(settings.models_file)
    registry = Registry(settings.models_dir)
    models, problems = {}, []
    for name, spec in config.models.items():
        fs = config.feature_set(spec.feature_set)
        bounds = {}
        flags = frozenset(f for f in spec.fallback_features if fs.features[f].dtype == "bool")
        for f in spec.fallback_features:
            lo, hi = (0.0, 1.0) if f in flags else (fs.features[f].min, fs.features[f].max)
            bounds[f] = (-math.inf if lo is None else lo, math.inf if hi is None else hi)
        fallback, note, codes = None, "", {}
        try:
            validate_name("model", name)  # the store would refuse every lookup of this model
            if registry.production_version(name, "fallback") is None:
                note = f"no production fallback model for {name!r}: misses and stale scores fall to the default"
            else:
                fallback = load_fallback(settings.models_dir, name, list(spec.fallback_features))
                fallback.warm()
                codes = {f: {v: float(i) for i, v in enumerate(order)} for f, order in fallback.categories.items()}
                note = f"fallback {fallback.version} loaded and warmed"
        except StoreError:
            note = f"model name {name!r} is not valid in the score store: rename it in the models file"
            problems.append(note)
        except PermissionError as exc:  # a home written by another uid with a umask that shuts this one out
            log.error("fallback model of %s cannot be read: %s", name, storage.permission_problem(exc))
            note = (f"production fallback model of {name!r} is not readable by uid {os.getuid()}; give it access "
                    "to PRESCORE_HOME (README: a home shared by two images), then POST /v1/admin/reload")  # fmt: skip
            problems.append(note)
        except (RegistryError, ValueError, KeyError) as exc:
            log.error("fallback model of %s cannot be used: %s", name, exc)
            kind = "is corrupted or does not match its manifest" if isinstance(exc, RegistryError) else "is unusable"
            note = f"production fallback model of {name!r} {kind}; restore or retrain it, then POST /v1/admin/reload"
            problems.append(note)
        cuts = threshold_cuts(spec)
        reject = frozenset(f for f in codes if fs.features[f].unknown == "reject")
        refused = rollout.check(name, spec, registry)
        if refused is not None:
            problems.append(refused)
        route = rollout.route(spec) if refused is None else None
        models[name] = ModelRuntime(
            name, spec, policy_version(spec), fallback, note, bounds, cuts, flags, codes, reject, route
        )
    return Snapshot(models, problems)
