"""The flows' deployments and schedules, and the two ways to run them (docs/flows.md).

Schedules are cron expressions in the campaign time zone (``PLEDGEFLOW_TIMEZONE``, default
Asia/Shanghai), configurable through ``PLEDGEFLOW_FLOWS_*_CRON``:

    drive-open-periods   drive_period for every open period        hourly        (0 * * * *)
    daily-reminders      send_reminders                            08:30 daily   (30 8 * * *)
    outbox-sweep         sweep_notifications                       every 10 min  (*/10 * * * *)
    daily-rollover       roll_over_period for every ended period   00:10 daily   (10 0 * * *)
    drive-one-case       drive_case, unscheduled (run by hand for one unit or member)

``serve_all`` needs a Prefect server with a scheduler: PREFECT_API_URL's, or a local one it
starts (SQLite under var/prefect/, UI at http://127.0.0.1:4200). A scheduled deployment never
overlaps itself (a run due while the previous one still runs is
cancelled: the next one does its work anyway). Entry points are module paths, so the same
deployments are served on one machine (``serve_all``) or sent to a work pool whose workers
have pledgeflow installed (``deploy_all``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from service.settings import Settings, get_settings

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

__all__ = ["deployments", "serve_all", "deploy_all", "local_prefect_server", "SCHEDULED"]

#: scheduled deployment → the settings field holding its cron (drive-one-case has none).
SCHEDULED = {"drive-open-periods": "flows_drive_cron", "daily-reminders": "flows_reminders_cron",
             "outbox-sweep": "flows_sweep_cron", "daily-rollover": "flows_rollover_cron"}


def deployments(settings: Settings | None = None, *,
                work_pool_name: str | None = None) -> list[RunnerDeployment]:
    """Every deployment with its schedule from ``settings`` (default: the environment)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    from flows import runtime  # noqa: F401 — heartbeat off in code
    from flows.drive import drive_case, drive_period
    from flows.reminders import send_reminders, sweep_notifications
    from flows.rollover import roll_over_period

    s = settings or get_settings()
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    common = dict(entrypoint_type=EntrypointType.MODULE_PATH, tags=["pledgeflow"],
                  work_pool_name=work_pool_name)

    def every(field: str) -> Cron:
        return Cron(getattr(s, field), timezone=s.timezone)

    return [
        drive_period.to_deployment(
            "drive-open-periods", schedule=every(SCHEDULED["drive-open-periods"]),
            parameters={"chunk_size": s.flows_chunk_size}, concurrency_limit=one_at_a_time,
            description="Open stages, close notices and rounds, announce, select, post "
                        "shortlists and hand decisions to the office, for every open period.",
            **common),
        send_reminders.to_deployment(
            "daily-reminders", schedule=every(SCHEDULED["daily-reminders"]),
            concurrency_limit=one_at_a_time,
            description="Reminders before deadlines, escalations after them, one email per "
                        "recipient per day.", **common),
        sweep_notifications.to_deployment(
            "outbox-sweep", schedule=every(SCHEDULED["outbox-sweep"]),
            concurrency_limit=one_at_a_time,
            description="Re-drive outbox rows stuck in sending.", **common),
        roll_over_period.to_deployment(
            "daily-rollover", schedule=every(SCHEDULED["daily-rollover"]),
            concurrency_limit=one_at_a_time,
            description="Close ended periods (unfinished cases lapse) and open the next.",
            **common),
        drive_case.to_deployment(
            "drive-one-case", description="Take the steps due on one case (ad hoc).", **common),
    ]


def serve_all(settings: Settings | None = None, *, prefect_port: int = 4200,
              prefect_home: Path = Path("var/prefect")) -> None:
    """Serve every deployment from this process until interrupted (one machine).

    Schedules need a Prefect server with its scheduler (the ephemeral one has none): with no
    ``PREFECT_API_URL`` set, a local server is started on 127.0.0.1:``prefect_port`` with its
    SQLite database under ``prefect_home``, and stopped on exit. Schedules are left active on
    shutdown (``pause_on_shutdown=False``), so a restart picks up where it stopped."""
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    s = settings or get_settings()
    with local_prefect_server(prefect_home, prefect_port) as api_url, \
            temporary_settings(updates={PREFECT_API_URL: api_url}):
        os.environ["PREFECT_API_URL"] = api_url  # for the flow-run processes
        serve(*deployments(s), pause_on_shutdown=False, limit=s.flows_serve_limit)


@contextmanager
def local_prefect_server(home: Path, port: int, *, timeout: float = 120.0) -> Iterator[str]:
    """The API URL of the configured Prefect server, or of one started here for the block."""
    from prefect.settings import PREFECT_API_URL

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home.resolve()),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start",
                                "--host", "127.0.0.1", "--port", str(port)], env=env,
                               preexec_fn=_die_with_parent)
    try:
        _wait_healthy(url, process, timeout)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _die_with_parent() -> None:
    """In the child: be terminated when the serving process ends, however it ends (Prefect's
    runner may leave through ``sys.exit`` from a signal handler, past our ``finally``)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Prefect server did not answer at {url} within {timeout:.0f} s")


def deploy_all(work_pool_name: str, settings: Settings | None = None) -> list[str]:
    """Register every deployment with a Prefect server for the workers of ``work_pool_name``
    (a process pool whose workers have pledgeflow installed); returns the deployment ids."""
    from prefect import deploy

    ids = deploy(*deployments(settings, work_pool_name=work_pool_name),
                 work_pool_name=work_pool_name, build=False, push=False,
                 print_next_steps_message=False, ignore_warnings=True)
    return [str(i) for i in ids]
