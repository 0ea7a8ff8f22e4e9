"""monitoring reports and their per-feature drift

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from warehouse.catalog import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_reports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False, index=True),
        sa.Column("partition_date", sa.Date(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("previous_run_id", sa.String(64), nullable=True),
        sa.Column("drift_status", sa.String(32), nullable=False),
        sa.Column("n_drifted", sa.Integer(), nullable=True),
        sa.Column("score_psi_previous", sa.Float(), nullable=True),
        sa.Column("score_psi_baseline", sa.Float(), nullable=True),
        sa.Column("quality_status", sa.String(32), nullable=False),
        sa.Column("objective", sa.String(64), nullable=True),
        sa.Column("n_labels", sa.BigInteger(), nullable=True),
        sa.Column("n_labels_unscored", sa.BigInteger(), nullable=True),
        sa.Column("published_quality", sa.JSON(), nullable=True),
        sa.Column("served_quality", sa.JSON(), nullable=True),
        sa.Column("serving_status", sa.String(32), nullable=False),
        sa.Column("answers", sa.BigInteger(), nullable=True),
        sa.Column("lost_to_trimming", sa.BigInteger(), nullable=True),
        sa.Column("serving", sa.JSON(), nullable=True),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("monitored_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("model", "partition_date", name="uq_monitor_reports"),
    )
    op.create_table(
        "monitor_features",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False, index=True),
        sa.Column("partition_date", sa.Date(), nullable=False),
        sa.Column("feature", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("psi", sa.Float(), nullable=True),
        sa.Column("null_rate", sa.Float(), nullable=True),
        sa.Column("baseline_null_rate", sa.Float(), nullable=True),
        sa.Column("null_rate_change", sa.Float(), nullable=True),
        sa.Column("unknown_share", sa.Float(), nullable=True),
        sa.Column("drifted", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("model", "partition_date", "feature", name="uq_monitor_features"),
    )


def downgrade() -> None:
    op.drop_table("monitor_features")
    op.drop_table("monitor_reports")
