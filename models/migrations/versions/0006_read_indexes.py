"""read indexes: a case's timeline in seq order without walking the whole chain

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 07:25:00

With a million events the timeline query (``case_id = ? AND seq > ? ORDER BY seq LIMIT n``)
walked the primary key and filtered by case (6.6 ms, 20,000 rows read for 101 kept). An index
on (case_id, seq) serves it directly; it also serves every ``case_id = ?`` lookup, so the
single-column index it replaces goes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Replace ix_event_case_id with ix_event_case_seq."""
    op.create_index("ix_event_case_seq", "event", ["case_id", "seq"])
    op.drop_index("ix_event_case_id", table_name="event")


def downgrade() -> None:
    """Back to the single-column index."""
    op.create_index("ix_event_case_id", "event", ["case_id"])
    op.drop_index("ix_event_case_seq", table_name="event")
