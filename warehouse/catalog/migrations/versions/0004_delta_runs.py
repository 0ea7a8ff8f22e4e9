"""delta runs and the delta drops they scored

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from warehouse.catalog import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delta_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False, index=True),
        sa.Column("base_run_id", sa.String(64), nullable=False),
        sa.Column("partition_date", sa.Date(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("drop_ids", sa.JSON(), nullable=False),
        sa.Column("rows_out", sa.BigInteger(), nullable=True),
        sa.Column("as_of", UTCDateTime(), nullable=True),
        sa.Column("output_path", sa.Text(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "delta_drops",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False, index=True),
        sa.Column("drop_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.UniqueConstraint("model", "drop_id", name="uq_delta_drops"),
    )


def downgrade() -> None:
    op.drop_table("delta_drops")
    op.drop_table("delta_runs")
