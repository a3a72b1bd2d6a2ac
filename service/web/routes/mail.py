"""The embedded default's mailbox: what the local catcher caught, rendered, links working.

Only mounted when ``PLEDGEFLOW_MAIL_CATCHER_DIR`` is set (the ``up`` command sets it); a real
deployment sends real mail and has no such page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from notifications.catcher import read_caught
from service.errors import NotFound
from service.web.i18n import pick_lang
from service.web.render import page

router = APIRouter(include_in_schema=False)


def _dir(request: Request) -> Path:
    return Path(request.app.state.settings.mail_catcher_dir)


@router.get("/dev/mail")
async def mailbox_page(request: Request) -> HTMLResponse:
    """Every caught message, newest first."""
    mails = await run_in_threadpool(read_caught, _dir(request))
    return page(request, "mail_list.html", pick_lang(request), mails=mails)


@router.get("/dev/mail/{key}")
async def mail_page(key: str, request: Request) -> HTMLResponse:
    """One message: headers, the HTML part in a sandboxed frame, and the text part."""
    mails = await run_in_threadpool(read_caught, _dir(request), limit=100_000)
    mail = next((m for m in mails if m.key == key), None)
    if mail is None:
        raise NotFound(f"no caught message {key}")
    return page(request, "mail_view.html", pick_lang(request), mail=mail)
