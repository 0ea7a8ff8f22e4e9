"""Alembic environment: runs against the connection handed over by ``upgrade_to_head``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from warehouse.catalog.tables import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url (the catalog URL) to run alembic from the command line")
    engine = sa.create_engine(url)
    connection = engine.connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
