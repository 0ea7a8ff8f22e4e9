"""Alembic migrations of the catalog. ``upgrade_to_head(engine)`` is what ``Catalog.open`` calls.

New revision: ``alembic -c warehouse/catalog/migrations/alembic.ini revision -m "..."`` then edit the file under
``versions/`` (autogenerate against ``warehouse.catalog.Base.metadata``).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

HERE = Path(__file__).parent


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    return cfg


def upgrade_to_head(engine: sa.Engine) -> None:
    cfg = alembic_config()
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
