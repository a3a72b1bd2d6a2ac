"""``pledgeflow flows …``: serve the scheduled flows, register them with a server, or run one now.

``flows_app`` is a Typer sub-app; the main CLI mounts it as ``flows``. Prefect (1.3 s to
import) is imported inside the commands only, so ``pledgeflow --help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any

import typer

from service.settings import get_settings

__all__ = ["flows_app"]

flows_app = typer.Typer(help="Prefect flows: serve the schedules, deploy them, or run one now.",
                        no_args_is_help=True, add_completion=False)
run_app = typer.Typer(help="Run one flow now, from this process (the service must be up; "
                      "PLEDGEFLOW_SERVICE_TOKEN set).", no_args_is_help=True)
flows_app.add_typer(run_app, name="run")

Plain = Annotated[bool, typer.Option(
    "--plain", help="Run the flow's function without Prefect: no server, no run record.")]


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run(flow_name: str, attr: str, plain: bool, **params: Any) -> None:
    """Import and run a flow (or its plain function); print its summary as JSON."""
    import importlib

    from flows.client import NotConfigured, ServiceError

    flow = getattr(importlib.import_module(f"flows.{flow_name}"), attr)
    target: Callable[..., Any] = flow.fn if plain else flow
    try:
        summary = target(**params)
    except (ServiceError, NotConfigured) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2, default=str))


@flows_app.command("serve")
def serve(prefect_port: Annotated[int, typer.Option(
        help="Port of the local Prefect server started when PREFECT_API_URL is not set.")]
        = 4200) -> None:
    """Serve every deployment on this machine until interrupted (schedules stay active).

    Without PREFECT_API_URL a local Prefect server (UI and scheduler, SQLite under
    var/prefect/) is started beside it and stopped with it."""
    from flows.deployments import serve_all

    serve_all(prefect_port=prefect_port)


@flows_app.command("deploy")
def deploy(pool: Annotated[str, typer.Option(help="Work pool (type process) whose workers "
                                              "run the flows.")]) -> None:
    """Register every deployment with the Prefect server at PREFECT_API_URL, for a pool."""
    from flows.deployments import deploy_all

    for deployment_id in deploy_all(pool):
        typer.echo(deployment_id)


@flows_app.command("schedules")
def schedules() -> None:
    """Print each scheduled deployment with its cron and time zone (from the settings)."""
    from flows.deployments import SCHEDULED

    settings = get_settings()
    for name, field in SCHEDULED.items():
        typer.echo(f"{name:<20} {getattr(settings, field):<14} {settings.timezone}")


@run_app.command("drive-period")
def run_drive_period(
    code: Annotated[str | None, typer.Argument(help="Period code; default every open one.")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Cases per bulk request.")] = None,
    plain: Plain = False,
) -> None:
    """Take every step due in a period now."""
    _run("drive", "drive_period", plain, period_code=code,
         chunk_size=chunk_size or get_settings().flows_chunk_size)


@run_app.command("drive-case")
def run_drive_case(case_id: int, plain: Plain = False) -> None:
    """Take the steps due on one case now."""
    _run("drive", "drive_case", plain, case_id=case_id)


@run_app.command("roll-over")
def run_roll_over(
    code: Annotated[str | None, typer.Argument(help="Period code; default every open one "
                                               "that has ended.")] = None,
    plain: Plain = False,
) -> None:
    """Close ended periods and open the next (idempotent)."""
    _run("rollover", "roll_over_period", plain, period_code=code)


@run_app.command("reminders")
def run_reminders(
    period: Annotated[str | None, typer.Option(help="One period; default every open one.")]
    = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Day (YYYY-MM-DD); default "
                                              "the service's today.")] = None,
    plain: Plain = False,
) -> None:
    """Queue today's reminders and escalations."""
    try:
        day = date.fromisoformat(as_of) if as_of else None
    except ValueError:
        _fail(f"--as-of must be a date like 2010-09-14, not {as_of!r}", 2)
        return
    _run("reminders", "send_reminders", plain, period_code=period, as_of=day)


@run_app.command("sweep")
def run_sweep(dead: Annotated[bool, typer.Option(help="Also re-drive dead rows.")] = False,
              plain: Plain = False) -> None:
    """Re-drive stuck outbox rows now."""
    _run("reminders", "sweep_notifications", plain, dead=dead)
