"""spot checks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import models.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "spot_check",
        sa.Column("period_id", sa.Integer(), nullable=False),
        sa.Column("drawn_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("drawn_by_id", sa.Integer(), nullable=False),
        sa.Column("seed", sa.String(length=64), nullable=False),
        sa.Column("organization_ids", JSON, nullable=False),
        sa.Column("findings", JSON, nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["drawn_by_id"], ["person.id"],
                                name=op.f("fk_spot_check_drawn_by_id_person")),
        sa.ForeignKeyConstraint(["period_id"], ["period.id"],
                                name=op.f("fk_spot_check_period_id_period")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spot_check")),
    )
    with op.batch_alter_table("spot_check", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spot_check_period_id"), ["period_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("spot_check", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spot_check_period_id"))
    op.drop_table("spot_check")
