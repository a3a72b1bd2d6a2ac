"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 03:33:41.784451
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import models.base

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_chain_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_head")),
    )
    op.create_table(
        "organization",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name_zh", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.String(length=400), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('campaign_office', 'committee', 'general_branch', 'branch')",
            name=op.f("ck_organization_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["organization.id"], name=op.f("fk_organization_parent_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization")),
        sa.UniqueConstraint("code", name=op.f("uq_organization_code")),
    )
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_organization_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_organization_path"), ["path"], unique=False)

    op.create_table(
        "period",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("name_zh", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("pledge_due_on", sa.Date(), nullable=False),
        sa.Column("review_opens_on", sa.Date(), nullable=False),
        sa.Column("review_due_on", sa.Date(), nullable=False),
        sa.Column("evaluation_opens_on", sa.Date(), nullable=False),
        sa.Column("evaluation_due_on", sa.Date(), nullable=False),
        sa.Column("commendation_on", sa.Date(), nullable=False),
        sa.Column(
            "rules",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('planned', 'open', 'closed')", name=op.f("ck_period_status")
        ),
        sa.CheckConstraint("starts_on <= ends_on", name=op.f("ck_period_dates")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_period")),
        sa.UniqueConstraint("code", name=op.f("uq_period_code")),
        sa.UniqueConstraint("sequence", name=op.f("uq_period_sequence")),
    )
    op.create_table(
        "criteria_set",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name_zh", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("applies_to", sa.String(length=16), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=True),
        sa.Column("refines_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "applies_to IN ('organization', 'member', 'carrier')",
            name=op.f("ck_criteria_set_applies"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_criteria_set_organization_id_organization"),
        ),
        sa.ForeignKeyConstraint(
            ["refines_id"],
            ["criteria_set.id"],
            name=op.f("fk_criteria_set_refines_id_criteria_set"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_criteria_set")),
        sa.UniqueConstraint("code", name=op.f("uq_criteria_set_code")),
    )
    op.create_table(
        "person",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("is_party_member", sa.Boolean(), nullable=False),
        sa.Column("lang", sa.String(length=8), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_person_organization_id_organization"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_person")),
        sa.UniqueConstraint("email", name=op.f("uq_person_email")),
    )
    with op.batch_alter_table("person", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_person_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "account",
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"], ["person.id"], name=op.f("fk_account_person_id_person")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account")),
        sa.UniqueConstraint("person_id", name=op.f("uq_account_person_id")),
        sa.UniqueConstraint("username", name=op.f("uq_account_username")),
    )
    op.create_table(
        "case",
        sa.Column("period_id", sa.Integer(), nullable=False),
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("subject_key", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("due_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "(subject_kind = 'member') = (person_id IS NOT NULL)",
            name=op.f("ck_case_member_has_person"),
        ),
        sa.CheckConstraint(
            "stage IN ('pledge', 'review', 'evaluation', 'commendation', 'closed')",
            name=op.f("ck_case_stage"),
        ),
        sa.CheckConstraint(
            "subject_kind IN ('organization', 'member')", name=op.f("ck_case_subject_kind")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_case_organization_id_organization"),
        ),
        sa.ForeignKeyConstraint(
            ["period_id"], ["period.id"], name=op.f("fk_case_period_id_period")
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["person.id"], name=op.f("fk_case_person_id_person")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case")),
        sa.UniqueConstraint("period_id", "subject_key", name=op.f("uq_case_period_id_subject_key")),
    )
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_case_due_at"), ["due_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_case_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            "ix_case_period_stage_status", ["period_id", "stage", "status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_case_person_id"), ["person_id"], unique=False)

    op.create_table(
        "commendation",
        sa.Column("period_id", sa.Integer(), nullable=False),
        sa.Column("award", sa.String(length=32), nullable=False),
        sa.Column("pool_size", sa.Integer(), nullable=False),
        sa.Column("quota", sa.Integer(), nullable=False),
        sa.Column("shortlist_size", sa.Integer(), nullable=False),
        sa.Column(
            "rules",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("selected_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('selected', 'under_notice', 'decided')", name=op.f("ck_commendation_status")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"], ["person.id"], name=op.f("fk_commendation_decided_by_id_person")
        ),
        sa.ForeignKeyConstraint(
            ["period_id"], ["period.id"], name=op.f("fk_commendation_period_id_period")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commendation")),
        sa.UniqueConstraint("period_id", "award", name=op.f("uq_commendation_period_id_award")),
    )
    op.create_table(
        "criterion",
        sa.Column("criteria_set_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name_zh", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("description_zh", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["criteria_set_id"],
            ["criteria_set.id"],
            name=op.f("fk_criterion_criteria_set_id_criteria_set"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_criterion")),
        sa.UniqueConstraint(
            "criteria_set_id", "code", name=op.f("uq_criterion_criteria_set_id_code")
        ),
    )
    with op.batch_alter_table("criterion", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_criterion_criteria_set_id"), ["criteria_set_id"], unique=False
        )

    op.create_table(
        "position",
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "role IN ('secretary', 'deputy', 'clerk', 'member', 'member_representative', 'worker_representative', 'admin', 'auditor')",
            name=op.f("ck_position_role"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_position_organization_id_organization"),
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["person.id"], name=op.f("fk_position_person_id_person")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_position")),
        sa.UniqueConstraint(
            "person_id",
            "organization_id",
            "role",
            name=op.f("uq_position_person_id_organization_id_role"),
        ),
    )
    with op.batch_alter_table("position", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_position_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_position_person_id"), ["person_id"], unique=False)

    op.create_table(
        "evaluation_round",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("scale", sa.String(length=32), nullable=False),
        sa.Column(
            "criteria",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("quorum", sa.Float(), nullable=False),
        sa.Column("opened_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closes_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("extended", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("disclosure_scope", sa.String(length=16), nullable=False),
        sa.Column(
            "tally",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("closed_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("announced_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "disclosure_scope IN ('unit', 'superior', 'public')",
            name=op.f("ck_evaluation_round_scope"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'tallied', 'inconclusive')", name=op.f("ck_evaluation_round_status")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case.id"], name=op.f("fk_evaluation_round_case_id_case")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_round")),
        sa.UniqueConstraint("case_id", name=op.f("uq_evaluation_round_case_id")),
    )
    op.create_table(
        "event",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("period_id", sa.Integer(), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("actor_person_id", sa.Integer(), nullable=True),
        sa.Column("actor_flow", sa.String(length=64), nullable=True),
        sa.Column("occurred_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "(actor_person_id IS NULL) OR (actor_flow IS NULL)", name=op.f("ck_event_one_actor")
        ),
        sa.ForeignKeyConstraint(
            ["actor_person_id"], ["person.id"], name=op.f("fk_event_actor_person_id_person")
        ),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"], name=op.f("fk_event_case_id_case")),
        sa.ForeignKeyConstraint(
            ["period_id"], ["period.id"], name=op.f("fk_event_period_id_period")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event")),
        sa.UniqueConstraint("hash", name=op.f("uq_event_hash")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_event_prev_hash")),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_case_id"), ["case_id"], unique=False)
        batch_op.create_index("ix_event_period_seq", ["period_id", "seq"], unique=False)

    op.create_table(
        "nomination",
        sa.Column("commendation_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("satisfaction", sa.Float(), nullable=True),
        sa.Column(
            "reasons",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("shortlisted", sa.Boolean(), nullable=False),
        sa.Column("adjustment_rationale", sa.Text(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"], name=op.f("fk_nomination_case_id_case")),
        sa.ForeignKeyConstraint(
            ["commendation_id"],
            ["commendation.id"],
            name=op.f("fk_nomination_commendation_id_commendation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nomination")),
        sa.UniqueConstraint("case_id", name=op.f("uq_nomination_case_id")),
        sa.UniqueConstraint(
            "commendation_id", "case_id", name=op.f("uq_nomination_commendation_id_case_id")
        ),
    )
    with op.batch_alter_table("nomination", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_nomination_commendation_id"), ["commendation_id"], unique=False
        )

    op.create_table(
        "notification",
        sa.Column("recipient_person_id", sa.Integer(), nullable=True),
        sa.Column("recipient_email", sa.String(length=254), nullable=False),
        sa.Column("lang", sa.String(length=8), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("case_version", sa.Integer(), nullable=True),
        sa.Column("batch_key", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'dead', 'dropped')",
            name=op.f("ck_notification_status"),
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case.id"], name=op.f("fk_notification_case_id_case")
        ),
        sa.ForeignKeyConstraint(
            ["recipient_person_id"],
            ["person.id"],
            name=op.f("fk_notification_recipient_person_id_person"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification")),
        sa.UniqueConstraint("batch_key", name=op.f("uq_notification_batch_key")),
        sa.UniqueConstraint("message_id", name=op.f("uq_notification_message_id")),
    )
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notification_case_id"), ["case_id"], unique=False)
        batch_op.create_index("ix_notification_due", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "pledge",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("submitted_by_id", sa.Integer(), nullable=True),
        sa.Column("submitted_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("approved_by_id", sa.Integer(), nullable=True),
        sa.Column("approved_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("published_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["approved_by_id"], ["person.id"], name=op.f("fk_pledge_approved_by_id_person")
        ),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"], name=op.f("fk_pledge_case_id_case")),
        sa.ForeignKeyConstraint(
            ["submitted_by_id"], ["person.id"], name=op.f("fk_pledge_submitted_by_id_person")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pledge")),
        sa.UniqueConstraint("case_id", name=op.f("uq_pledge_case_id")),
    )
    op.create_table(
        "public_notice",
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("commendation_id", sa.Integer(), nullable=True),
        sa.Column("starts_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'closed', 'withdrawn')", name=op.f("ck_public_notice_status")
        ),
        sa.CheckConstraint(
            "subject IN ('pledge', 'shortlist')", name=op.f("ck_public_notice_subject")
        ),
        sa.CheckConstraint("starts_at < ends_at", name=op.f("ck_public_notice_window")),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case.id"], name=op.f("fk_public_notice_case_id_case")
        ),
        sa.ForeignKeyConstraint(
            ["commendation_id"],
            ["commendation.id"],
            name=op.f("fk_public_notice_commendation_id_commendation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_public_notice")),
    )
    with op.batch_alter_table("public_notice", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_public_notice_case_id"), ["case_id"], unique=False)

    op.create_table(
        "review",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=True),
        sa.Column("achievements", sa.Text(), nullable=False),
        sa.Column("problems", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column(
            "ratings",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("recorded_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rectification_plan", sa.Text(), nullable=True),
        sa.Column("acknowledged_by_id", sa.Integer(), nullable=True),
        sa.Column("acknowledged_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('scheduled', 'ad_hoc')", name=op.f("ck_review_kind")),
        sa.ForeignKeyConstraint(
            ["acknowledged_by_id"], ["person.id"], name=op.f("fk_review_acknowledged_by_id_person")
        ),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"], name=op.f("fk_review_case_id_case")),
        sa.ForeignKeyConstraint(
            ["reviewer_id"], ["person.id"], name=op.f("fk_review_reviewer_id_person")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review")),
    )
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_case_id"), ["case_id"], unique=False)

    op.create_table(
        "action_link",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("recipient_person_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("case_version", sa.Integer(), nullable=True),
        sa.Column("notification_id", sa.Integer(), nullable=True),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("superseded_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"], name=op.f("fk_action_link_case_id_case")),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notification.id"],
            name=op.f("fk_action_link_notification_id_notification"),
        ),
        sa.ForeignKeyConstraint(
            ["recipient_person_id"],
            ["person.id"],
            name=op.f("fk_action_link_recipient_person_id_person"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_link")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_action_link_token_hash")),
    )
    with op.batch_alter_table("action_link", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_action_link_case_id"), ["case_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_action_link_recipient_person_id"), ["recipient_person_id"], unique=False
        )

    op.create_table(
        "ballot",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column(
            "answers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["round_id"], ["evaluation_round.id"], name=op.f("fk_ballot_round_id_evaluation_round")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ballot")),
    )
    with op.batch_alter_table("ballot", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ballot_round_id"), ["round_id"], unique=False)

    op.create_table(
        "evaluator_assignment",
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("voted_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('member_representative', 'worker_representative')",
            name=op.f("ck_evaluator_assignment_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["person.id"], name=op.f("fk_evaluator_assignment_person_id_person")
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["evaluation_round.id"],
            name=op.f("fk_evaluator_assignment_round_id_evaluation_round"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluator_assignment")),
        sa.UniqueConstraint(
            "round_id", "person_id", name=op.f("uq_evaluator_assignment_round_id_person_id")
        ),
    )
    with op.batch_alter_table("evaluator_assignment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_evaluator_assignment_round_id"), ["round_id"], unique=False
        )

    op.create_table(
        "objection",
        sa.Column("notice_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("filed_by_name", sa.String(length=100), nullable=False),
        sa.Column("contact", sa.String(length=254), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("filed_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("resolved_by_id", sa.Integer(), nullable=True),
        sa.Column("resolved_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'upheld', 'dismissed')", name=op.f("ck_objection_status")
        ),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"], name=op.f("fk_objection_case_id_case")),
        sa.ForeignKeyConstraint(
            ["notice_id"], ["public_notice.id"], name=op.f("fk_objection_notice_id_public_notice")
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by_id"], ["person.id"], name=op.f("fk_objection_resolved_by_id_person")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_objection")),
    )
    with op.batch_alter_table("objection", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_objection_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_objection_notice_id"), ["notice_id"], unique=False)

    op.create_table(
        "pledge_item",
        sa.Column("pledge_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("criterion_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("measures", sa.Text(), nullable=False),
        sa.Column("deadline_on", sa.Date(), nullable=True),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("assessment_standard", sa.Text(), nullable=False),
        sa.Column("fulfilment", sa.String(length=16), nullable=False),
        sa.Column("carried_over_from_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "fulfilment IN ('pending', 'in_progress', 'kept', 'not_kept')",
            name=op.f("ck_pledge_item_fulfilment"),
        ),
        sa.ForeignKeyConstraint(
            ["carried_over_from_id"],
            ["pledge_item.id"],
            name=op.f("fk_pledge_item_carried_over_from_id_pledge_item"),
        ),
        sa.ForeignKeyConstraint(
            ["criterion_id"], ["criterion.id"], name=op.f("fk_pledge_item_criterion_id_criterion")
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["person.id"], name=op.f("fk_pledge_item_owner_id_person")
        ),
        sa.ForeignKeyConstraint(
            ["pledge_id"], ["pledge.id"], name=op.f("fk_pledge_item_pledge_id_pledge")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pledge_item")),
    )
    with op.batch_alter_table("pledge_item", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pledge_item_pledge_id"), ["pledge_id"], unique=False)

    op.create_table(
        "ballot_receipt",
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignment_id"],
            ["evaluator_assignment.id"],
            name=op.f("fk_ballot_receipt_assignment_id_evaluator_assignment"),
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["evaluation_round.id"],
            name=op.f("fk_ballot_receipt_round_id_evaluation_round"),
        ),
        sa.PrimaryKeyConstraint("round_id", "assignment_id", name=op.f("pk_ballot_receipt")),
    )
    op.create_table(
        "fulfilment_entry",
        sa.Column("pledge_item_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("recorded_by_id", sa.Integer(), nullable=True),
        sa.Column("recorded_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'in_progress', 'kept', 'not_kept')",
            name=op.f("ck_fulfilment_entry_status"),
        ),
        sa.ForeignKeyConstraint(
            ["pledge_item_id"],
            ["pledge_item.id"],
            name=op.f("fk_fulfilment_entry_pledge_item_id_pledge_item"),
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"],
            ["person.id"],
            name=op.f("fk_fulfilment_entry_recorded_by_id_person"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fulfilment_entry")),
    )
    with op.batch_alter_table("fulfilment_entry", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fulfilment_entry_pledge_item_id"), ["pledge_item_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("fulfilment_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fulfilment_entry_pledge_item_id"))

    op.drop_table("fulfilment_entry")
    op.drop_table("ballot_receipt")
    with op.batch_alter_table("pledge_item", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pledge_item_pledge_id"))

    op.drop_table("pledge_item")
    with op.batch_alter_table("objection", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_objection_notice_id"))
        batch_op.drop_index(batch_op.f("ix_objection_case_id"))

    op.drop_table("objection")
    with op.batch_alter_table("evaluator_assignment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evaluator_assignment_round_id"))

    op.drop_table("evaluator_assignment")
    with op.batch_alter_table("ballot", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ballot_round_id"))

    op.drop_table("ballot")
    with op.batch_alter_table("action_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_action_link_recipient_person_id"))
        batch_op.drop_index(batch_op.f("ix_action_link_case_id"))

    op.drop_table("action_link")
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_case_id"))

    op.drop_table("review")
    with op.batch_alter_table("public_notice", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_public_notice_case_id"))

    op.drop_table("public_notice")
    op.drop_table("pledge")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_due")
        batch_op.drop_index(batch_op.f("ix_notification_case_id"))

    op.drop_table("notification")
    with op.batch_alter_table("nomination", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nomination_commendation_id"))

    op.drop_table("nomination")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_period_seq")
        batch_op.drop_index(batch_op.f("ix_event_case_id"))

    op.drop_table("event")
    op.drop_table("evaluation_round")
    with op.batch_alter_table("position", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_position_person_id"))
        batch_op.drop_index(batch_op.f("ix_position_organization_id"))

    op.drop_table("position")
    with op.batch_alter_table("criterion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_criterion_criteria_set_id"))

    op.drop_table("criterion")
    op.drop_table("commendation")
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_person_id"))
        batch_op.drop_index("ix_case_period_stage_status")
        batch_op.drop_index(batch_op.f("ix_case_organization_id"))
        batch_op.drop_index(batch_op.f("ix_case_due_at"))

    op.drop_table("case")
    op.drop_table("account")
    with op.batch_alter_table("person", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_person_organization_id"))

    op.drop_table("person")
    op.drop_table("criteria_set")
    op.drop_table("period")
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_organization_path"))
        batch_op.drop_index(batch_op.f("ix_organization_parent_id"))

    op.drop_table("organization")
    op.drop_table("chain_head")
