"""Alembic migrations of the catalog. ``upgrade_to_head(engine)`` is what ``Catalog.open`` calls.

New revision: ``alembic -c warehouse/catalog/migrations/alembic.ini revision -m "..."`` then edit the file under
``versions/`` (autogenerate against ``warehouse.catalog.Base.metadata``).

A catalog already at the newest revision (every command but the first after an upgrade) is recognised without
importing Alembic: ``head_revision`` reads the ``revision`` / ``down_revision`` lines of ``versions/*.py`` and
``current_revision`` the ``alembic_version`` table. Alembic runs only when they differ (or the files cannot be
read that simply), and then decides itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

HERE = Path(__file__).parent
_ASSIGNMENT = re.compile(r"""^(revision|down_revision)\s*=\s*(?:["']([^"']+)["']|None)\s*$""", re.M)


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    return cfg


def head_revision() -> str | None:
    """The one revision of ``versions/`` no other revision follows, or None when that is not plain to see."""
    revisions, parents = set(), set()
    for path in sorted((HERE / "versions").glob("*.py")):
        found = dict((k, v or None) for k, v in _ASSIGNMENT.findall(path.read_text()))
        if "revision" not in found or "down_revision" not in found or not found["revision"]:
            return None
        revisions.add(found["revision"])
        if found["down_revision"]:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database records (None: not migrated yet, or more than one head)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    return str(rows[0]) if len(rows) == 1 else None


def upgrade_to_head(engine: sa.Engine) -> None:
    head = head_revision()
    if head is not None and current_revision(engine) == head:
        return
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config()
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
