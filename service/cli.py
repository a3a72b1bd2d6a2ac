"""The ``pledgeflow`` command: database, seed data, audit, periods and the workflow diagram.

Every command that changes data runs in one transaction: it all happens or none of it does.
Errors print a readable message (with every reason) and exit non-zero; no tracebacks for
mistakes a user can make.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from flows.cli import flows_app
from notifications.cli import mail_app
from service.clock import Clock, FixedClock, SystemClock, start_of_day
from service.errors import PledgeflowError
from service.settings import get_settings

app = typer.Typer(help="pledgeflow — the Strive-for-Excellence (创先争优) workflow engine.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident history.", no_args_is_help=True)
period_app = typer.Typer(help="Campaign periods.", no_args_is_help=True)
workflow_app = typer.Typer(help="The transition table.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (for scripts and for the flows).", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(mail_app, name="mail", help="Email templates.")
app.add_typer(flows_app, name="flows", help="Prefect flows: serve, deploy, run.")
app.add_typer(tokens_app, name="tokens")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(period_app, name="period")
app.add_typer(workflow_app, name="workflow")

AsOf = Annotated[str | None, typer.Option(
    "--as-of", help="Act as of this date (YYYY-MM-DD, campaign time zone) instead of now.")]
CLI_FLOW = "cli"


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _unit_of_work() -> Iterator[Session]:
    """One transaction for the whole command; PledgeflowError becomes a readable exit."""
    from service.db import make_engine, make_session_factory, transaction

    engine = make_engine(get_settings().database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            yield session
    except PledgeflowError as exc:
        lines = [exc.message] + [f"  - {r.message} [{r.code}]" for r in exc.reasons]
        _fail("\n".join(lines))
    except DBAPIError as exc:
        _fail(f"database error: {str(exc.orig).splitlines()[0]}\n"
              "  is the database reachable and its schema current? try `pledgeflow db upgrade`")
    finally:
        engine.dispose()


def _clock(as_of: str | None) -> Clock:
    if as_of is None:
        return SystemClock()
    try:
        return FixedClock(start_of_day(date.fromisoformat(as_of)))
    except ValueError:
        _fail(f"--as-of must be a date like 2010-09-01, not {as_of!r}", 2)
        raise  # unreachable


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Option("head", help="Target revision.")) -> None:
    """Bring the database (SQLite file or PostgreSQL) to the newest schema."""
    from service import migrate

    url = get_settings().database_url
    migrate.upgrade(url, revision)
    typer.echo(f"database at revision {migrate.current(url)}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, or 'base'.")) -> None:
    """Take the schema back to an earlier revision (``base`` drops everything)."""
    from service import migrate

    url = get_settings().database_url
    migrate.downgrade(url, revision)
    typer.echo(f"database at revision {migrate.current(url) or 'base'}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision the database is at."""
    from service import migrate

    typer.echo(migrate.current(get_settings().database_url) or "base (empty)")


@app.command()
def seed(demo: bool = typer.Option(False, "--demo", help="Add invented demo people too.")) -> None:
    """Load the notice's units, periods and criteria (idempotent)."""
    from service.seed import seed as load

    with _unit_of_work() as session:
        report = load(session, demo=demo)
    typer.echo(f"seeded: {report.summary()}")


@audit_app.command("verify")
def audit_verify(head: str | None = typer.Option(
        None, "--head", help="A head hash from an earlier export; detects truncation.")) -> None:
    """Check every link of the history; print OK or the first broken event."""
    from service import history

    with _unit_of_work() as session:
        broken = history.verify(session, expected_head=head)
        seq, head_hash = history.head(session)
    if broken is not None:
        _fail(f"history broken at event {broken.seq}: {broken.problem}")
    typer.echo(f"OK: {seq} events, head {head_hash}")


@audit_app.command("export")
def audit_export(
    period: str = typer.Option(..., "--period", help="Period code, e.g. 2010."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv."),
    output: Path | None = typer.Option(None, "--output", "-o", help="File (default: stdout)."),
) -> None:
    """Write a period's history with the chain's head hash."""
    from service import history
    from service.periods import get_period

    if fmt not in ("jsonl", "csv"):
        _fail(f"--format must be jsonl or csv, not {fmt!r}", 2)
    with _unit_of_work() as session:
        period_row = get_period(session, period)
        out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        try:
            count, head_hash = history.export(session, out, period_id=period_row.id, fmt=fmt)
        finally:
            if output:
                out.close()
    typer.echo(f"exported {count} events of period {period}; head {head_hash}", err=True)


@period_app.command("open")
def period_open(code: str, as_of: AsOf = None) -> None:
    """Open a planned period: a case for every active unit and member."""
    from service.periods import get_period, open_period
    from service.workflow.roles import Actor

    with _unit_of_work() as session:
        opened = open_period(session, get_period(session, code, lock=True),
                             actor=Actor(flow=CLI_FLOW), clock=_clock(as_of))
    typer.echo(f"period {code} open; {opened} new cases")


@period_app.command("rollover")
def period_rollover(code: str, as_of: AsOf = None) -> None:
    """Close an ended period (unfinished cases lapse) and open the next (idempotent)."""
    from service.periods import roll_over
    from service.workflow.roles import Actor

    with _unit_of_work() as session:
        report = roll_over(session, code, actor=Actor(flow=CLI_FLOW), clock=_clock(as_of))
    typer.echo(f"closed: {report.closed_period or '-'} (lapsed {report.lapsed}); "
               f"opened: {report.opened_period or '-'} ({report.cases_opened} cases)")


@workflow_app.command("diagram")
def workflow_diagram() -> None:
    """Print the transition table as a Mermaid state diagram."""
    from service.workflow.diagram import mermaid

    typer.echo(mermaid())


@app.command()
def simulate(period: str = typer.Option("2010", help="Period to run."),
             rollover: bool = typer.Option(True, help="Roll over into the next period.")) -> None:
    """Run a whole period for every seeded unit and member through the engine (demo data)."""
    from service.simulation import run_period

    with _unit_of_work() as session:
        clock = FixedClock()
        summary = run_period(session, period, clock=clock, roll_over=rollover)
    typer.echo(summary.render())


@app.command()
def demo(periods: int = typer.Option(3, min=1, max=3, help="How many of the seed's periods."),
         var: Path = typer.Option(Path("var/demo"), help="Wiped and rebuilt for the demo."),
         prefect: bool = typer.Option(False, help="Run the flows as Prefect flow runs on an "
                                      "ephemeral server (slower) instead of as plain functions.")
         ) -> None:
    """Replay the seed's whole campaign on the embedded defaults with a simulated clock."""
    from service.demo import run_demo

    run_demo(var, periods=periods, prefect=prefect, echo=typer.echo)


@app.command("up")
def up_command(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000),
               smtp_port: int = typer.Option(8025, help="Port of the local mail catcher."),
               flows: bool = typer.Option(True, help="Serve the Prefect flows beside it.")
               ) -> None:
    """The main job on the embedded defaults: demo data, mail catcher, service, flows."""
    from service.up import up

    up(host=host, port=port, smtp_port=smtp_port, flows=flows)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8000, help="Port."),
          workers: int = typer.Option(1, min=1, help="Worker processes.")) -> None:
    """Run the HTTP service (uvicorn with uvloop and httptools)."""
    import uvicorn

    from service.api.http import PROTOCOL

    uvicorn.run("service.api.asgi:app", host=host, port=port, workers=workers,
                loop="uvloop", http=PROTOCOL, proxy_headers=False, access_log=False)


@app.command()
def dispatch() -> None:
    """Deliver the outbox on its own until stopped (Ctrl-C or SIGTERM): beside a service run
    with PLEDGEFLOW_DISPATCHER=false, or as more dispatchers on PostgreSQL."""
    import asyncio
    import signal

    from notifications.dispatcher import Dispatcher
    from service.db import make_engine, make_session_factory

    settings = get_settings()
    engine = make_engine(settings.database_url)
    dispatcher = Dispatcher.from_settings(settings, make_session_factory(engine), SystemClock())

    def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop)
        typer.echo(f"delivering the outbox to {dispatcher.smtp.host}:{dispatcher.smtp.port}; "
                   "Ctrl-C stops", err=True)

    try:
        dispatcher.run_until_stopped(stop_on_signals)
    finally:
        engine.dispose()


@users_app.command("create")
def users_create(
    email: str = typer.Option(..., help="The person's e-mail address (the person must exist)."),
    username: str = typer.Option(..., help="Sign-in name."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input."),
) -> None:
    """Give an existing person a sign-in (the password is asked for, or read from stdin)."""
    import sqlalchemy as sa

    from models import Person
    from service.accounts import create_account

    password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt(
        "password", hide_input=True, confirmation_prompt=True)
    with _unit_of_work() as session:
        person_id = session.scalar(sa.select(Person.id).where(Person.email == email))
        if person_id is None:
            _fail(f"no person with e-mail {email!r}")
        create_account(session, person_id=person_id, username=username, password=password)
    typer.echo(f"account {username} created")


@tokens_app.command("create")
def tokens_create(
    name: str = typer.Option(..., help="What the token is for."),
    username: str | None = typer.Option(None, help="A person's token (their username)."),
    flow: str | None = typer.Option(None, help="A service token for this flow name."),
) -> None:
    """Create a bearer token and print it once (store it; only its hash is kept)."""
    import sqlalchemy as sa

    from models import Account
    from service.accounts import create_token

    if (username is None) == (flow is None):
        _fail("give exactly one of --username or --flow", 2)
    with _unit_of_work() as session:
        account_id = None
        if username is not None:
            account_id = session.scalar(sa.select(Account.id).where(Account.username == username))
            if account_id is None:
                _fail(f"no account {username!r}")
        token, _ = create_token(session, name=name, now=SystemClock().now(),
                                account_id=account_id, flow_name=flow)
    typer.echo(token)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
