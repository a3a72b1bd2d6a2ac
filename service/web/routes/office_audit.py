"""Audit (``/office/audit``): check the hash chain and export a period's history.

Checking walks the whole chain (``history.verify``) and says OK or where it first breaks; an
optional head hash from an earlier export also catches truncation. The export is a download
of one period's events as JSON lines or CSV, ending with the chain's head hash (also sent as
the ``X-Chain-Head`` header). Both only read, so both are plain GET forms: auditors use them
as well as the office.
"""

from __future__ import annotations

import io
import re

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response

from models import Period
from service import history
from service.api.deps import UoW
from service.errors import NotFound
from service.periods import get_period
from service.web.routes.office_home import OfficeViewer, office_page
from service.web.session import PRIVATE, PageRoute

router = APIRouter(include_in_schema=False, route_class=PageRoute)

FORMATS = {"jsonl": ("application/x-ndjson; charset=utf-8", "jsonl"),
           "csv": ("text/csv; charset=utf-8", "csv")}
_HASH = re.compile(r"^[0-9a-f]{64}$")


def _safe(name: str) -> str:
    """A file name part made of safe characters only."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


@router.get("/office/audit")
def audit_page(request: Request, uow: UoW, office: OfficeViewer) -> Response:
    """The chain's head; with ``verify=1`` the check (against ``head`` when given)."""
    params = request.query_params
    expected = params.get("head", "").strip().lower()
    bad_head = bool(expected) and not _HASH.match(expected)
    checked = params.get("verify") == "1" and not bad_head
    with uow() as session:
        broken = history.verify(session, expected_head=expected or None) if checked else None
        seq, head_hash = history.head(session)
        periods = list(session.scalars(sa.select(Period).order_by(Period.sequence)))
    return office_page(request, "office/audit.html", office, status=422 if bad_head else 200,
                       checked=checked, broken=broken, seq=seq, head_hash=head_hash,
                       expected=expected, bad_head=bad_head, periods=periods)


@router.get("/office/audit/export")
def export(request: Request, uow: UoW, office: OfficeViewer) -> Response:
    """One period's events as a download, ending with the head hash."""
    fmt = request.query_params.get("format", "jsonl")
    code = request.query_params.get("period", "")
    if fmt not in FORMATS:
        raise NotFound(f"unknown format {fmt!r}")
    out = io.StringIO()
    with uow() as session:
        period = get_period(session, code)
        written, head_hash = history.export(session, out, period_id=period.id, fmt=fmt)
    media, ext = FORMATS[fmt]
    name = f"events-{_safe(period.code)}.{ext}"
    return Response(out.getvalue().encode("utf-8"), media_type=media, headers={
        **PRIVATE, "Content-Disposition": f'attachment; filename="{name}"',
        "X-Chain-Head": head_hash, "X-Events": str(written)})
