"""The Alembic migrations, on both databases: from empty to head, back to base, up again, and
every revision in between; at head the schema is exactly what the models declare."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import models
from service import migrate
from service.db import make_engine
from tests.conftest import BACKENDS, create_pg_database, drop_pg_database, require_backend


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The URL of a new, empty database (a temporary SQLite file or a new PostgreSQL db)."""
    require_backend(request.param)
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    name = f"pledgeflow_migrations_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(name)
    try:
        yield url
    finally:
        drop_pg_database(name)


def _script(url: str) -> ScriptDirectory:
    return ScriptDirectory.from_config(migrate.alembic_config(url))


def _head(url: str) -> str:
    heads = _script(url).get_heads()
    assert len(heads) == 1, f"the migrations have several heads (a branch to merge): {heads}"
    return heads[0]


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _drift(url: str, metadata: sa.MetaData = models.Base.metadata) -> list[Any]:
    """What autogenerate would write to make the database match ``metadata`` (empty = none).

    Types are compared strictly (``compare_type=True``, Alembic's own comparison). It reports no
    spurious differences for our two portable types, so no custom ``compare_type`` is needed:
    ``UTCDateTime`` is compared through its implementation ``DateTime(timezone=True)`` (on
    PostgreSQL a naive ``timestamp`` would be reported; SQLite has no zone to report), and
    ``JSONType`` through its per-dialect variant (JSON where JSONB is declared is reported).
    ``test_the_comparison_sees_drift`` proves the comparison is not blind. Server defaults are
    compared too: the models declare none, so any in the database is drift.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True, "compare_server_default": True,
            })
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_upgrade_from_empty_reaches_head_and_matches_the_models(empty_url):
    head = _head(empty_url)
    assert migrate.current(empty_url) is None
    assert _tables(empty_url) == set()

    migrate.upgrade(empty_url)

    assert migrate.current(empty_url) == head
    assert _tables(empty_url) == set(models.Base.metadata.tables) | {"alembic_version"}
    assert _drift(empty_url) == []


def test_downgrade_to_base_empties_the_database_and_upgrade_works_again(empty_url):
    head = _head(empty_url)
    migrate.upgrade(empty_url)

    migrate.downgrade(empty_url, "base")

    assert migrate.current(empty_url) is None
    assert _tables(empty_url) <= {"alembic_version"}
    if empty_url.startswith("postgresql"):
        engine = make_engine(empty_url)
        try:
            with engine.connect() as conn:
                leftovers = conn.execute(sa.text(
                    "select relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                    " where n.nspname = 'public' and c.relkind in ('S', 'v', 'm', 'r', 'p')"
                    " and relname <> 'alembic_version'")).scalars().all()
                types = conn.execute(sa.text(
                    "select typname from pg_type t join pg_namespace n on n.oid = t.typnamespace"
                    " where n.nspname = 'public' and t.typtype = 'e'")).scalars().all()
        finally:
            engine.dispose()
        assert leftovers == [] and types == [], (leftovers, types)

    migrate.upgrade(empty_url)

    assert migrate.current(empty_url) == head
    assert _drift(empty_url) == []


def test_every_revision_upgrades_and_downgrades_one_step_at_a_time(empty_url):
    script = _script(empty_url)
    revisions = [r.revision for r in reversed(list(script.walk_revisions("base", "heads")))]
    assert revisions, "no migrations found"
    assert revisions[-1] == _head(empty_url)
    for revision in revisions:
        migrate.upgrade(empty_url, revision)
        assert migrate.current(empty_url) == revision
    for revision in reversed(revisions):
        previous = script.get_revision(revision).down_revision
        migrate.downgrade(empty_url, "-1")
        assert migrate.current(empty_url) == previous
        migrate.upgrade(empty_url, revision)  # each step is repeatable after its undo
        assert migrate.current(empty_url) == revision
        migrate.downgrade(empty_url, "-1")
    assert migrate.current(empty_url) is None
    assert _tables(empty_url) <= {"alembic_version"}


def test_the_comparison_sees_drift(empty_url):
    """Guard for the test above: a model that differs from the migrated schema is reported."""
    migrate.upgrade(empty_url)
    changed = sa.MetaData(naming_convention=models.Base.metadata.naming_convention)
    for table in models.Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["event"].c.hash.type = sa.String(32)
    changed.tables["case"].c.version.type = sa.BigInteger()
    sa.Table("not_migrated", changed, sa.Column("id", sa.Integer, primary_key=True))
    expected = {("add_table", "not_migrated"), ("modify_type", "event.hash"),
                ("modify_type", "case.version")}
    if empty_url.startswith("postgresql"):  # only PostgreSQL keeps these distinctions
        changed.tables["event"].c.occurred_at.type = sa.DateTime()  # naive
        changed.tables["event"].c.payload.type = sa.JSON()  # not JSONB
        expected |= {("modify_type", "event.occurred_at"), ("modify_type", "event.payload")}

    found = set()
    for diff in _drift(empty_url, changed):
        for op in diff if isinstance(diff, list) else [diff]:
            if op[0] == "add_table":
                found.add(("add_table", op[1].name))
            elif op[0] == "modify_type":
                found.add(("modify_type", f"{op[2]}.{op[3]}"))
            else:
                found.add((op[0], ""))
    assert expected <= found, found
