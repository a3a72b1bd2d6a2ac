"""ballot box keeps counts only: no per-ballot rows that storage order could tie to a voter

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 04:30:00

Existing ballots are folded into the counters. A downgrade cannot restore individual ballots
(that is the point); it writes one single-answer ballot per counted answer, which keeps the
per-criterion tallies but not which answers shared a ballot.
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    counts = op.create_table(
        "ballot_count",
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("criterion", sa.String(length=64), nullable=False),
        sa.Column("option", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["evaluation_round.id"],
                                name=op.f("fk_ballot_count_round_id_evaluation_round")),
        sa.PrimaryKeyConstraint("round_id", "criterion", "option", name=op.f("pk_ballot_count")),
    )
    conn = op.get_bind()
    ballot = sa.table("ballot", sa.column("round_id", sa.Integer), sa.column("answers", JSON))
    totals: dict[tuple[int, str, str], int] = {}
    for round_id, answers in conn.execute(sa.select(ballot.c.round_id, ballot.c.answers)):
        for criterion, option in (answers or {}).items():
            key = (round_id, criterion, option)
            totals[key] = totals.get(key, 0) + 1
    if totals:
        op.bulk_insert(counts, [{"round_id": r, "criterion": c, "option": o, "count": n}
                                for (r, c, o), n in totals.items()])
    with op.batch_alter_table("ballot", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ballot_round_id"))
    op.drop_table("ballot")


def downgrade() -> None:
    ballot = op.create_table(
        "ballot",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("answers", JSON, nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["evaluation_round.id"],
                                name=op.f("fk_ballot_round_id_evaluation_round")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ballot")),
    )
    with op.batch_alter_table("ballot", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ballot_round_id"), ["round_id"], unique=False)
    conn = op.get_bind()
    counts = sa.table("ballot_count", sa.column("round_id", sa.Integer),
                      sa.column("criterion", sa.String), sa.column("option", sa.String),
                      sa.column("count", sa.Integer))
    rows = [{"id": uuid.uuid4(), "round_id": r, "answers": {c: o}}
            for r, c, o, n in conn.execute(sa.select(counts)) for _ in range(n)]
    if rows:
        op.bulk_insert(ballot, rows)
    op.drop_table("ballot_count")
