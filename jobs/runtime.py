"""What a prescore command works with: settings, the validated models file, the catalog, the registry, Redis.

Built once per command or task (``open_runtime``, or ``Runtime.from_settings`` and ``close()``); resources open
lazily on first use and close in ``close()``. Nothing here runs at import time.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from warehouse.catalog import Catalog
from warehouse.datasets.storage import StoragePath
from warehouse.model_config import ProjectConfig, load_config
from warehouse.settings import Settings
from warehouse.store import ensure_local_redis

if TYPE_CHECKING:
    from warehouse.registry import Manifest, Registry


@dataclass
class Runtime:
    settings: Settings
    config: ProjectConfig
    _catalog: Catalog | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Runtime:
        """``ConfigError`` when ``PRESCORE_HOME`` is a URL without ``PRESCORE_CATALOG_URL``/``PRESCORE_REDIS_URL``."""
        settings = settings or Settings()
        settings.check_remote_home()
        return cls(settings=settings, config=load_config(settings.models_file))

    @property
    def home(self) -> StoragePath:
        """The warehouse root: a local directory, or an ``ObjectPath`` on object storage."""
        return self.settings.root

    @property
    def local_dir(self) -> Path:
        """Machine-local state (pid files, the demo's Airflow home): see ``Settings.local_dir``."""
        return self.settings.local_dir

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.open(self.settings.resolved_catalog_url)
        return self._catalog

    @cached_property
    def registry(self) -> Registry:
        from warehouse.registry import Registry  # imports xgboost (seconds): only commands that use models pay it

        return Registry(self.settings.models_dir)

    @cached_property
    def redis_url(self) -> str:
        """``PRESCORE_REDIS_URL``, or the embedded server of this home (started on first use)."""
        if self.settings.redis_url:
            return self.settings.redis_url
        return ensure_local_redis(self.settings.embedded_redis_dir).url

    @property
    def prediction_log_url(self) -> str:
        """``PRESCORE_PREDICTION_LOG_URL``, or the score store's Redis (``redis_url``)."""
        return self.settings.prediction_log_url or self.redis_url

    def add_model_version(self, manifest: Manifest, *, promote: bool, challenger: bool = False) -> None:
        """Record a version just registered in the registry in the catalog, and with ``promote`` make it
        production in both (what ``prescore train`` and ``prescore register`` do after ``Registry.register``);
        with ``challenger`` (a primary version, not promoted) make it a challenger (``Registry.add_challenger``)."""
        if challenger and (promote or manifest.kind != "primary"):
            raise ValueError("a challenger is a primary version that is not promoted")
        self.catalog.record_model_version(
            model=manifest.name, kind=manifest.kind, version=manifest.version, sha256=manifest.sha256,
            artifact_path=str(self.registry.kind_dir(manifest.name, manifest.kind) / manifest.version),
            features=list(manifest.features), metrics=dict(manifest.metrics),
            training_window=dict(manifest.training_window), created_at=dt.datetime.fromisoformat(manifest.created_at),
        )  # fmt: skip
        if promote:
            self.registry.promote(manifest.name, manifest.kind, manifest.version)
            self.catalog.mark_promoted(manifest.name, manifest.kind, manifest.version)
        elif challenger:
            self.registry.add_challenger(manifest.name, manifest.version)

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None


@contextmanager
def open_runtime(settings: Settings | None = None) -> Iterator[Runtime]:
    """A ``Runtime`` for one command or task (``Runtime.from_settings``), closed when the block exits, also on an
    exception. The catalog's migrations log only warnings and errors."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # catalog migrations: quiet unless they fail
    rt = Runtime.from_settings(settings)
    try:
        yield rt
    finally:
        rt.close()
