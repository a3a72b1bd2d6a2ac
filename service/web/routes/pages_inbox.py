"""My inbox (``/inbox``) and the batch screen (``/inbox/batch``).

The inbox is the JSON inbox's own query (``service.api.routes.inbox``), rendered: overdue
first, then by deadline. The batch screen lists the submitted pledges the signed-in superior
may approve or return, each with its own choice and comment; posting applies every chosen row
through the choke point in its own SAVEPOINT, so a refused row undoes nothing else and comes
back with what was typed and every reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from service.api.deps import AppClock, UoW
from service.api.routes.cases import pledge_out
from service.api.routes.inbox import InboxItem
from service.api.routes.inbox import inbox_page_for as inbox_query
from service.api.schemas import PledgeOut
from service.clock import Clock
from service.errors import NotFound, PledgeflowError, Reason
from service.web.routes.pages import act, count, form_values, reasons_of, show
from service.web.session import CsrfChecked, PageRoute, PageUser, SignedIn

router = APIRouter(include_in_schema=False, route_class=PageRoute)

PAGE_SIZE = 100
BATCH_CHOICES = ("approve", "return")
#: Where on the case page each inbox action is done.
ACTION_TARGETS = {
    "edit_pledge": "/pledge/edit", "submit": "/pledge/edit", "approve": "#decide",
    "return": "#decide", "withdraw": "#actions", "record_review": "#review",
    "record_ad_hoc_review": "#review", "acknowledge_review": "#acknowledge",
    "cast_ballot": "#ballot", "record_fulfilment": "#pledge", "uphold_objection": "#objections",
    "dismiss_objection": "#objections",
}


def action_links(item: InboxItem) -> list[tuple[str, str]]:
    """(action, link) for each action of an inbox row, one link per place."""
    seen: set[str] = set()
    links = []
    for action in item.actions:
        href = f"/cases/{item.case.id}{ACTION_TARGETS.get(action, '#actions')}"
        if href not in seen:
            seen.add(href)
            links.append((action, href))
    return links


@router.get("/inbox")
async def inbox_page(request: Request, uow: UoW, clock: AppClock,
                     user: SignedIn) -> Response:
    """What I must do, overdue first, with a link to do each thing."""
    try:
        offset = max(int(request.query_params.get("offset", "0")), 0)
    except ValueError:
        offset = 0
    box = await run_in_threadpool(inbox_query, uow=uow, clock=clock, principal=user.principal,
                                  limit=PAGE_SIZE, offset=offset)
    batch = sum(1 for it in box.items if {"approve", "return"} & set(it.actions)
                and it.case.status == "submitted")
    return show(request, "inbox.html", user, box=box, links=action_links, batch=batch,
                page_size=PAGE_SIZE)


@dataclass
class BatchRow:
    item: InboxItem
    pledge: PledgeOut | None
    choice: str = "skip"
    comment: str = ""
    reasons: list[Reason] = field(default_factory=list)


def _rows(uow: UoW, clock: Clock, user: PageUser) -> list[BatchRow]:
    """The submitted pledges this person may approve or return now, with their pledges."""
    box = inbox_query(uow=uow, clock=clock, principal=user.principal, limit=200, offset=0)
    items = [it for it in box.items if it.case.stage == "pledge"
             and it.case.status == "submitted" and set(BATCH_CHOICES) <= set(it.actions)]
    rows = []
    with uow() as session:
        for it in items:
            try:
                rows.append(BatchRow(it, pledge_out(session, it.case.id)))
            except NotFound:
                rows.append(BatchRow(it, None))
    return rows


@router.get("/inbox/batch")
async def batch_page(request: Request, uow: UoW, clock: AppClock,
                     user: SignedIn) -> Response:
    """A table of pending pledges: approve, return or skip each, with its own comment."""
    rows = await run_in_threadpool(_rows, uow, clock, user)
    return show(request, "batch.html", user, rows=rows, done=[], gone=[], vanished=0)


@dataclass
class Done:
    row: BatchRow
    action: str


def _apply(uow: UoW, clock: Clock, user: PageUser, values: dict[str, str]
           ) -> tuple[list[Done], dict[int, BatchRow], int]:
    """Apply every chosen row, each in its own SAVEPOINT; the refused come back typed.

    Rows no longer waiting for this person (withdrawn, decided by someone else meanwhile)
    are left alone and only counted."""
    listed = {row.item.case.id: row for row in _rows(uow, clock, user)}
    chosen: dict[int, tuple[str, str, str]] = {}
    for key, choice in values.items():
        if key.startswith("choice-") and key[7:].isdigit() and choice in BATCH_CHOICES:
            case_id = int(key[7:])
            chosen[case_id] = (choice, values.get(f"comment-{case_id}", ""),
                               values.get(f"version-{case_id}", ""))
    done: list[Done] = []
    refused: dict[int, BatchRow] = {}
    vanished = 0
    with uow() as session:
        for case_id in sorted(chosen):
            choice, comment, version = chosen[case_id]
            row = listed.get(case_id)
            if row is None:
                vanished += 1
                continue
            row.choice, row.comment = choice, comment
            try:
                with session.begin_nested():
                    act(session, user, clock, case_id=case_id, action=choice,
                        comment=comment.strip() or None,
                        expected_version=int(version) if version.isdigit() else None)
                done.append(Done(row, choice))
            except PledgeflowError as exc:
                row.reasons = reasons_of(exc)
                refused[case_id] = row
            except IntegrityError:
                row.reasons = [Reason("conflict", "changed concurrently; retry this row")]
                refused[case_id] = row
    return done, refused, vanished


@router.post("/inbox/batch")
async def batch_apply(request: Request, uow: UoW, clock: AppClock,
                      user: CsrfChecked) -> Response:
    """Apply the chosen rows and show what happened to each; 422 if any was refused."""
    values = form_values(await request.form())
    done, refused, vanished = await run_in_threadpool(_apply, uow, clock, user, values)
    for action in BATCH_CHOICES:
        count(request, action, sum(d.action == action for d in done))
    rows = await run_in_threadpool(_rows, uow, clock, user)
    rows = [refused.get(row.item.case.id, row) for row in rows]
    shown = {row.item.case.id for row in rows}
    gone = [row for case_id, row in refused.items() if case_id not in shown]
    return show(request, "batch.html", user, rows=rows, done=done, gone=gone,
                vanished=vanished, status=422 if refused else 200)
