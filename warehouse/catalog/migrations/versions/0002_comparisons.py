"""champion/challenger comparisons

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from warehouse.catalog import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False, index=True),
        sa.Column("challenger_version", sa.String(64), nullable=False),
        sa.Column("partition_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("champion_version", sa.String(64), nullable=True),
        sa.Column("champion_run_id", sa.String(64), nullable=True),
        sa.Column("challenger_run_id", sa.String(64), nullable=True),
        sa.Column("n_champion", sa.BigInteger(), nullable=True),
        sa.Column("n_challenger", sa.BigInteger(), nullable=True),
        sa.Column("n_joined", sa.BigInteger(), nullable=True),
        sa.Column("psi", sa.Float(), nullable=True),
        sa.Column("rank_correlation", sa.Float(), nullable=True),
        sa.Column("decision_change", sa.Float(), nullable=True),
        sa.Column("objective", sa.String(64), nullable=True),
        sa.Column("n_labelled", sa.BigInteger(), nullable=True),
        sa.Column("champion_quality", sa.JSON(), nullable=True),
        sa.Column("challenger_quality", sa.JSON(), nullable=True),
        sa.Column("compared_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("model", "challenger_version", "partition_date", name="uq_comparisons"),
    )


def downgrade() -> None:
    op.drop_table("comparisons")
