"""sign-in notifications: NOTIFY pledgeflow_sign_in when a token, session or account changes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 01:00:00

Each service worker remembers the principals it has resolved (``service.api.signin``) and
forgets them all on a notification. These statement-level triggers send one whenever a
token or web session is revoked or deleted, or an account is deactivated or deleted, by any
writer (the service, the CLI, or SQL typed by hand). PostgreSQL only: SQLite runs one process,
which looks every caller up.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, the columns whose update may end a principal)
WATCHED = (("api_token", "revoked_at, account_id, flow_name, token_hash"),
           ("web_session", "revoked_at, expires_at, account_id, token_hash"),
           ("account", "active, person_id"))


def upgrade() -> None:
    """The notifying function and a trigger per watched table."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE FUNCTION pledgeflow_sign_in_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('pledgeflow_sign_in', TG_TABLE_NAME);
            RETURN NULL;
        END $$""")
    for table, columns in WATCHED:
        op.execute(f"CREATE TRIGGER {table}_sign_in_changed AFTER UPDATE OF {columns} OR "
                   f"DELETE ON {table} FOR EACH STATEMENT "
                   f"EXECUTE FUNCTION pledgeflow_sign_in_changed()")


def downgrade() -> None:
    """Drop the triggers and the function."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, _ in WATCHED:
        op.execute(f"DROP TRIGGER {table}_sign_in_changed ON {table}")
    op.execute("DROP FUNCTION pledgeflow_sign_in_changed()")
