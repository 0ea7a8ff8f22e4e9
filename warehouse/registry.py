"""The model registry: xgboost artifacts with manifests, hash-checked on load, one production version per kind.

Layout under ``<home>/models/<model>/<kind>/``::

    <version>/model.ubj         native xgboost (UBJSON) artifact
    <version>/manifest.json     name, kind, version, ordered features, sha256, metrics, window, versions
    <version>/baseline.json     the feature and score profile of the data the version was trained on (or, for a
                                registered model, of a reference partition): ``jobs.profile``; its sha256 is the
                                manifest's ``baseline_sha256`` (optional: versions registered before it have none)
    production.json             {"version": ...}: the promoted version of this kind (atomic replace)
    challengers.json            {"versions": [...]}: primary versions scored in shadow next to production
                                (``warehouse.rollout``; at most ``MAX_CHALLENGERS``; atomic replace)

Contract: ``load`` returns a booster only if the artifact's sha256 equals the manifest's and the manifest's
feature list is the one the models file declares for this model and kind (same names, same order);
otherwise ``RegistryError`` saying which check failed and what to do (retrain, or restore the file).

On object storage (``root`` an ``ObjectPath``, ``datasets.storage``): ``register`` uploads the artifact and
writes the manifest last (a version without a manifest is not listed), ``production.json`` is replaced by one
PUT, and ``load`` hash-checks and loads a local copy of the artifact (``storage.local_copy``): xgboost only ever
reads a local file whose sha256 equals the manifest's.

``load_document`` makes the same checks and returns the artifact decoded as a document (``warehouse.ubjson``, what
``booster.save_raw("json")`` holds) without importing xgboost: the online reader runs its fallback model from it.
xgboost is imported only by the calls that need a booster.

The baseline is written inside the same staged directory (on object storage: before the manifest), so a version
has its baseline from the moment it is listed. ``baseline`` returns it after checking its sha256 against the
manifest (``RegistryError`` when the file was changed or is missing), or None for a version without one; the
registry treats it as an opaque JSON document (``jobs.profile`` builds and reads it). Scoring never reads it: a
damaged baseline stops monitoring, not scoring.

Removal (``remove_version``, what retention calls) never touches the production version. A version leaves the
listing first — locally one rename of its directory to ``.removing-<version>``, on object storage its manifest is
deleted first — and its files go after; a crash in between leaves an entry of ``leftovers``, never a listed version
without its artifact.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from warehouse.datasets import storage
from warehouse.datasets.storage import ObjectPath, StoragePath, sha256_file
from warehouse.errors import RegistryError
from warehouse.xgboost_loader import xgboost

if TYPE_CHECKING:
    import xgboost as xgb

Kind = Literal["primary", "fallback"]
KINDS: tuple[Kind, ...] = ("primary", "fallback")
ARTIFACT = "model.ubj"
MANIFEST = "manifest.json"
BASELINE = "baseline.json"
PRODUCTION = "production.json"
CHALLENGERS = "challengers.json"
STAGING_PREFIX = ".staging-"  # a version being registered (locally)
REMOVING_PREFIX = ".removing-"  # a version being removed (locally)


@dataclass(frozen=True)
class Manifest:
    name: str
    kind: Kind
    version: str
    features: list[str]
    sha256: str
    metrics: dict[str, float] = field(default_factory=dict)
    training_window: dict[str, Any] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    lineage: dict[str, Any] = field(default_factory=dict)  # where a registered (not trained) model came from
    # category feature → its values in code order (code i is categories[i]); jobs.feature_matrix encodes with it
    categories: dict[str, list[str]] = field(default_factory=dict)
    baseline_sha256: str = ""  # sha256 of baseline.json; "" for a version without a baseline


@dataclass(frozen=True)
class LoadedModel:
    manifest: Manifest
    booster: xgb.Booster
    path: StoragePath  # the artifact in the registry (local or object storage)


def _atomic_write_text(path: StoragePath, text: str) -> None:
    if isinstance(path, ObjectPath):
        path.write_text(text)  # one PUT: replaced whole
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    storage.honour_umask(fd)  # mkstemp makes 0600: another uid (the online image) must read production.json
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise RegistryError(f"unknown model kind {kind!r}; use one of {list(KINDS)}")
    return kind


class Registry:
    """File-based model registry rooted at ``<home>/models`` (a local directory or an object-storage prefix)."""

    def __init__(self, root: StoragePath | str) -> None:
        self.root = storage.as_path(root)

    def kind_dir(self, model: str, kind: str) -> StoragePath:
        return self.root / model / _check_kind(kind)

    def register(
        self,
        model: str,
        kind: str,
        booster: xgb.Booster,
        features: list[str],
        metrics: dict[str, float],
        training_window: dict[str, Any],
        lineage: dict[str, Any] | None = None,
        categories: dict[str, list[str]] | None = None,
        baseline: dict[str, Any] | None = None,
    ) -> Manifest:
        """Save the booster and its manifest as a new version (staged, then renamed into place).

        ``categories``: the code order of each category feature (``Manifest.categories``); ``baseline``: the
        version's data profile (``jobs.profile``), written as ``baseline.json`` in the same step."""
        if booster.num_features() != len(features):
            raise RegistryError(
                f"{model}/{kind}: booster has {booster.num_features()} features but {len(features)} names given"
            )
        unknown = sorted(set(categories or {}) - set(features))
        if unknown:
            raise RegistryError(f"{model}/{kind}: categories given for {unknown}, which are not among its features")
        kdir = self.kind_dir(model, kind)
        about = {"lineage": dict(lineage or {}), "categories": {k: list(v) for k, v in (categories or {}).items()},
                 "baseline": baseline}  # fmt: skip
        if isinstance(kdir, ObjectPath):
            with tempfile.TemporaryDirectory(prefix="prescore-register-") as local:
                return self._register(model, kind, booster, features, metrics, training_window, about, Path(local),
                                      kdir)  # fmt: skip
        kdir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=kdir, prefix=STAGING_PREFIX))
        storage.honour_umask(staging, directory=True)  # mkdtemp makes 0700: it becomes the version directory
        return self._register(model, kind, booster, features, metrics, training_window, about, staging, kdir)

    def _register(
        self,
        model: str,
        kind: str,
        booster: xgb.Booster,
        features: list[str],
        metrics: dict[str, float],
        training_window: dict[str, Any],
        about: dict[str, Any],
        staging: Path,
        kdir: StoragePath,
    ) -> Manifest:
        artifact = staging / ARTIFACT
        booster.save_model(artifact)
        digest = sha256_file(artifact)
        baseline_sha = ""
        if about["baseline"] is not None:
            (staging / BASELINE).write_text(json.dumps(about["baseline"], sort_keys=True, allow_nan=False))
            baseline_sha = sha256_file(staging / BASELINE)
        created = dt.datetime.now(dt.UTC)
        version = f"{created:%Y%m%dT%H%M%S%f}-{digest[:8]}"
        xgb = xgboost()

        manifest = Manifest(
            name=model,
            kind=kind,  # type: ignore[arg-type]  # checked by kind_dir above
            version=version,
            features=list(features),
            sha256=digest,
            metrics={k: float(v) for k, v in metrics.items()},
            training_window=training_window,
            library_versions={"xgboost": xgb.__version__, "python": platform.python_version()},
            created_at=created.isoformat(),
            lineage=about["lineage"],
            categories=about["categories"],
            baseline_sha256=baseline_sha,
        )
        text = json.dumps(asdict(manifest), indent=2, sort_keys=True)
        if isinstance(kdir, ObjectPath):
            storage.upload(artifact, kdir / version / ARTIFACT)
            if baseline_sha:
                storage.upload(staging / BASELINE, kdir / version / BASELINE)
            (kdir / version / MANIFEST).write_text(text)  # last: the version exists once its manifest does
            return manifest
        (staging / MANIFEST).write_text(text)
        os.rename(staging, kdir / version)
        return manifest

    def versions(self, model: str, kind: str) -> list[str]:
        kdir = self.kind_dir(model, kind)
        if isinstance(kdir, ObjectPath):
            return sorted(p.parent.name for p in kdir.glob(f"*/{MANIFEST}") if not p.parent.name.startswith("."))
        if not kdir.exists():
            return []
        return sorted(p.name for p in kdir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def manifest(self, model: str, kind: str, version: str) -> Manifest:
        path = self.kind_dir(model, kind) / version / MANIFEST
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise RegistryError(
                f"no {kind} model {model!r} version {version!r} at {path.parent}; "
                f"`prescore train --model {model}` registers one"
            ) from None
        except ValueError as exc:
            raise RegistryError(f"manifest {path} is not valid JSON: {exc}") from None
        known = {f.name for f in fields(Manifest)}  # a newer prescore may add fields: an older reader ignores them
        return Manifest(**{k: v for k, v in raw.items() if k in known})

    def baseline(self, model: str, kind: str, version: str) -> dict[str, Any] | None:
        """The version's baseline document, sha256-checked against its manifest; None for a version registered
        without one. ``RegistryError`` when the file is missing, changed or unreadable."""
        manifest = self.manifest(model, kind, version)
        if not manifest.baseline_sha256:
            return None
        path = self.kind_dir(model, kind) / version / BASELINE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RegistryError(f"baseline {path} is missing although its manifest records one; restore it") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != manifest.baseline_sha256:
            raise RegistryError(
                f"baseline {path} does not match its manifest (sha256 {actual[:12]}… != "
                f"{manifest.baseline_sha256[:12]}…): the file was changed after registration; restore it"
            )
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise RegistryError(f"baseline {path} is not valid JSON: {exc}; restore it") from None
        return doc if isinstance(doc, dict) else None

    def promote(self, model: str, kind: str, version: str) -> None:
        """Make ``version`` the production version of this kind (one atomic file replace); a challenger promoted
        stops being one."""
        self.manifest(model, kind, version)  # must exist
        _atomic_write_text(self.kind_dir(model, kind) / PRODUCTION, json.dumps({"version": version}))
        if kind == "primary" and version in self.challengers(model):
            self.remove_challenger(model, version)

    # ---- challengers (primary versions only) ----

    def challengers(self, model: str) -> list[str]:
        """The model's challenger versions, in the order they were added."""
        path = self.kind_dir(model, "primary") / CHALLENGERS
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise RegistryError(f"{path} is not valid JSON: {exc}; fix or delete it") from None
        return [str(v) for v in raw.get("versions", [])]

    def require_room_for_challenger(self, model: str) -> None:
        """``RegistryError`` unless ``model`` has a production primary version and room for one more challenger
        (checked before a challenger is trained or registered)."""
        from warehouse.rollout import MAX_CHALLENGERS

        self.require_production(model, "primary")  # a challenger challenges a champion
        current = self.challengers(model)
        if len(current) >= MAX_CHALLENGERS:
            raise RegistryError(
                f"{model} has {len(current)} challengers already ({', '.join(current)}; at most {MAX_CHALLENGERS}); "
                f"promote one or drop one with `prescore rollout drop --model {model} --version V`"
            )

    def add_challenger(self, model: str, version: str) -> list[str]:
        """Make a registered primary ``version`` a challenger; returns the challengers. ``RegistryError`` for the
        production version, an unknown one, or beyond ``MAX_CHALLENGERS``."""
        from warehouse.rollout import MAX_CHALLENGERS

        self.manifest(model, "primary", version)  # must exist
        if version == self.production_version(model, "primary"):
            raise RegistryError(f"{model} {version} is the production (champion) version; a challenger must differ")
        current = self.challengers(model)
        if version in current:
            return current
        if len(current) >= MAX_CHALLENGERS:
            raise RegistryError(
                f"{model} has {len(current)} challengers already ({', '.join(current)}; at most {MAX_CHALLENGERS}); "
                f"promote one or drop one with `prescore rollout drop --model {model} --version V`"
            )
        return self._write_challengers(model, [*current, version])

    def remove_challenger(self, model: str, version: str) -> list[str]:
        """Stop scoring ``version`` as a challenger (a version that is not one is fine); returns the challengers."""
        current = self.challengers(model)
        if version not in current:
            return current
        return self._write_challengers(model, [v for v in current if v != version])

    def _write_challengers(self, model: str, versions: list[str]) -> list[str]:
        _atomic_write_text(self.kind_dir(model, "primary") / CHALLENGERS, json.dumps({"versions": versions}))
        return versions

    def production_version(self, model: str, kind: str) -> str | None:
        path = self.kind_dir(model, kind) / PRODUCTION
        if not path.exists():
            return None
        return str(json.loads(path.read_text())["version"])

    def require_production(self, model: str, kind: str) -> str:
        version = self.production_version(model, kind)
        if version is None:
            raise RegistryError(f"model {model!r} has no production {kind} model; run `prescore train --model {model}`")
        return version

    def remove_version(self, model: str, kind: str, version: str) -> None:
        """Delete a version that is not the production one (see the module docstring); a missing one is fine.

        ``RegistryError`` when ``version`` is the production version of its kind."""
        if version == self.production_version(model, kind):
            raise RegistryError(f"{model}/{kind} {version} is the production version; promote another one first")
        if kind == "primary" and version in self.challengers(model):
            raise RegistryError(f"{model} {version} is a challenger; drop it (prescore rollout drop) first")
        vdir = self.kind_dir(model, kind) / version
        if isinstance(vdir, ObjectPath):
            (vdir / MANIFEST).unlink(missing_ok=True)  # unlisted from here on
            storage.rmtree(vdir)
            return
        if not vdir.is_dir():
            return
        doomed = vdir.with_name(f"{REMOVING_PREFIX}{version}")
        os.rename(vdir, doomed)  # unlisted in one step
        storage.rmtree(doomed)

    def leftovers(self, model: str, kind: str) -> list[StoragePath]:
        """What crashed writers and removals left in a kind directory: locally the ``.staging-*`` and ``.removing-*``
        directories and temp files of ``promote``, on object storage the version prefixes without a manifest (an
        upload not finished yet looks the same: callers remove only old ones)."""
        kdir = self.kind_dir(model, kind)
        if isinstance(kdir, ObjectPath):
            listed = set(self.versions(model, kind))
            return [p for p in kdir.iterdir() if p.name not in listed and p.name != PRODUCTION and p.is_dir()]
        if not kdir.is_dir():
            return []
        prefixes = (STAGING_PREFIX, REMOVING_PREFIX, f".{PRODUCTION}.", f".{CHALLENGERS}.")  # temp files last
        return sorted(p for p in kdir.iterdir() if p.name.startswith(prefixes))

    def _verified(
        self, model: str, kind: str, expected_features: list[str], version: str | None
    ) -> tuple[Manifest, StoragePath, Path]:
        """(manifest, artifact path, local copy) of a version whose sha256 and features check out."""
        version = version or self.require_production(model, kind)
        manifest = self.manifest(model, kind, version)
        path = self.kind_dir(model, kind) / version / ARTIFACT
        if not path.exists():
            raise RegistryError(f"artifact {path} is missing; retrain or restore it")
        local = storage.local_copy(path, manifest.sha256)
        actual = sha256_file(local)
        if actual != manifest.sha256:
            raise RegistryError(
                f"artifact {path} does not match its manifest (sha256 {actual[:12]}… != "
                f"{manifest.sha256[:12]}…): the file was changed after registration; restore it or retrain"
            )
        if list(manifest.features) != list(expected_features):
            missing = [f for f in expected_features if f not in manifest.features]
            extra = [f for f in manifest.features if f not in expected_features]
            raise RegistryError(
                f"{kind} model {model!r} {version} was trained on features that do not match the models "
                f"file (missing {missing}, unexpected {extra}, or a different order); retrain the model"
            )
        return manifest, path, Path(local)

    def load_document(
        self, model: str, kind: str, expected_features: list[str], version: str | None = None
    ) -> tuple[Manifest, dict[str, Any]]:
        """A version (default: production) checked as ``load`` checks it, decoded without xgboost."""
        from warehouse import ubjson

        manifest, path, local = self._verified(model, kind, expected_features, version)
        try:
            doc = ubjson.loads(local.read_bytes())
        except ValueError as exc:
            raise RegistryError(f"artifact {path} is not a readable model: {exc}; retrain or restore it") from None
        return manifest, doc

    def load(self, model: str, kind: str, expected_features: list[str], version: str | None = None) -> LoadedModel:
        """Load a version (default: production), verifying its sha256 and its features against the contract."""
        xgb = xgboost()

        manifest, path, local = self._verified(model, kind, expected_features, version)
        booster = xgb.Booster()
        try:
            booster.load_model(local)
        except xgb.core.XGBoostError as exc:
            raise RegistryError(f"artifact {path} cannot be loaded by xgboost: {exc}") from None
        if booster.num_features() != len(manifest.features):
            raise RegistryError(f"artifact {path} expects {booster.num_features()} features, manifest lists "
                                f"{len(manifest.features)}; retrain the model")  # fmt: skip
        return LoadedModel(manifest=manifest, booster=booster, path=path)
