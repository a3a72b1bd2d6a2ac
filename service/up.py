"""``pledgeflow up``: the whole system on the embedded defaults, for a newcomer.

SQLite under ./var/, the notice's data plus demo people, the first period opened, a local mail
catcher (a real SMTP server on loopback) whose mail the web app shows at /dev/mail, the
service with its outbox dispatcher, and — once the service answers — the Prefect flows
served beside it (``pledgeflow flows serve``, its own process, with a service token).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import typer

from service.settings import get_settings

__all__ = ["up"]

BANNER = """
pledgeflow is running (ready in {ready:.1f} s)
  service      {base}/            API docs {base}/docs
  mailbox      {base}/dev/mail     (every email sent, links work)
  bulletin     {base}/api/v1/bulletin
  database     {db}
  flows        starting in the background (Prefect UI http://127.0.0.1:{prefect_port})
  sign in as   office.admin, supply-marketing.secretary, … (password: pledgeflow-demo)
Press Ctrl-C to stop.
"""


def up(host: str = "127.0.0.1", port: int = 8000, smtp_port: int = 8025,
       var: Path = Path("var"), prefect_port: int = 4200, flows: bool = True) -> None:
    """Prepare the embedded defaults and run everything until interrupted."""
    started = time.perf_counter()
    var.mkdir(parents=True, exist_ok=True)
    mail_dir = var / "mail"
    os.environ.setdefault("PLEDGEFLOW_DATABASE_URL", f"sqlite:///{var}/pledgeflow.db")
    os.environ.setdefault("PLEDGEFLOW_SMTP_URL", f"smtp://127.0.0.1:{smtp_port}")
    os.environ.setdefault("PLEDGEFLOW_BASE_URL", f"http://{host}:{port}")
    os.environ.setdefault("PLEDGEFLOW_MAIL_CATCHER_DIR", str(mail_dir))
    get_settings.cache_clear()
    settings = get_settings()

    from service import migrate
    from service.accounts import create_token
    from service.clock import SystemClock
    from service.db import make_engine, make_session_factory
    from service.periods import get_period, open_period
    from service.seed import seed
    from service.workflow.roles import Actor

    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session, session.begin():
        report = seed(session, demo=True)
        first = get_period(session, "2010")
        if first.status == "planned":
            open_period(session, first, actor=Actor(flow="up"), clock=SystemClock())
        flow_token = settings.service_token or create_token(
            session, name="pledgeflow up", now=SystemClock().now(), flow_name="scheduler")[0]
    engine.dispose()
    typer.echo(f"seed: {report.summary()}")

    from notifications.catcher import start_catcher

    catcher = start_catcher(mail_dir, port=smtp_port)
    import uvicorn

    from service.api.app import create_app, freeze_startup_heap
    from service.api.http import PROTOCOL

    app = create_app(settings)
    freeze_startup_heap()
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http=PROTOCOL,
                            access_log=False, log_level="warning")
    server = uvicorn.Server(config)

    original_startup = server.startup
    children: list[subprocess.Popen[bytes]] = []

    async def startup(sockets=None):  # type: ignore[no-untyped-def]
        await original_startup(sockets)
        typer.echo(BANNER.format(ready=time.perf_counter() - started, base=settings.base_url,
                                 db=settings.database_url, prefect_port=prefect_port))
        if flows:
            children.append(subprocess.Popen(
                [sys.executable, "-m", "service.cli", "flows", "serve",
                 "--prefect-port", str(prefect_port)],
                env={**os.environ, "PLEDGEFLOW_SERVICE_TOKEN": flow_token},
                stdout=(var / "flows.log").open("ab"), stderr=subprocess.STDOUT))

    server.startup = startup  # type: ignore[method-assign]
    try:
        server.run()
    finally:
        for child in children:
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        catcher.stop()
