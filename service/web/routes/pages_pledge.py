"""The pledge editor (``/cases/{id}/pledge/edit``), usable without JavaScript.

Items are rows of ``items-<n>-<field>`` inputs: criterion or carrier (from the case's criteria
sets), target, measures, deadline, assessment standard (and the owner, kept as it was). "Add a
row" and "remove this row" are submit buttons that show the form again with everything typed so
far; "save draft" is ``edit_pledge``; "submit" is ``edit_pledge`` then ``submit`` in one
transaction, so a refused submit saves nothing either. Rows left entirely blank are ignored.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import AppClock, UoW
from service.api.routes.cases import pledge_out
from service.clock import Clock
from service.errors import NotFound, PledgeflowError, Reason
from service.visibility import ensure_case_visible
from service.web.routes.pages import act, count, criteria_sets, form_values, reasons_of, show
from service.web.session import CsrfChecked, PageRoute, PageUser, SignedIn, message_page
from service.workflow import engine

router = APIRouter(include_in_schema=False, route_class=PageRoute)

FIELDS = ("criterion", "target", "measures", "deadline_on", "assessment_standard", "owner_id")
TEXT_FIELDS = ("criterion", "target", "measures", "deadline_on", "assessment_standard")
MAX_ROWS = 60
_ROW_KEY = re.compile(r"^items-(\d{1,3})-([a-z_]+)$")
_ITEM_LOC = re.compile(r"^items\.(\d+)\.")


def rows_from_form(values: dict[str, str]) -> list[dict[str, str]]:
    """The item rows as typed, in the order shown."""
    rows: dict[int, dict[str, str]] = {}
    for key, value in values.items():
        match = _ROW_KEY.match(key)
        if match and match.group(2) in FIELDS:
            rows.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return [{f: rows[n].get(f, "") for f in FIELDS} for n in sorted(rows)][:MAX_ROWS]


def _blank() -> dict[str, str]:
    return dict.fromkeys(FIELDS, "")


def _is_blank(row: dict[str, str]) -> bool:
    return not any(row[f].strip() for f in TEXT_FIELDS)


def _edit_data(summary: str, rows: list[dict[str, str]]) -> tuple[dict[str, Any], list[int]]:
    """The ``edit_pledge`` input, and for each item sent the row number it came from."""
    kept = [n for n, row in enumerate(rows) if not _is_blank(row)]
    items = [{"criterion": rows[n]["criterion"] or None, "target": rows[n]["target"],
              "measures": rows[n]["measures"], "deadline_on": rows[n]["deadline_on"] or None,
              "assessment_standard": rows[n]["assessment_standard"],
              "owner_id": int(rows[n]["owner_id"]) if rows[n]["owner_id"].isdigit() else None}
             for n in kept]
    return {"summary": summary, "items": items}, kept


def _renumber(reasons: list[Reason], kept: list[int]) -> list[Reason]:
    """Say "row 3" for the row as shown (input errors count items from 0, blanks left out)."""
    def fix(reason: Reason) -> Reason:
        match = _ITEM_LOC.match(reason.message)
        if not match or int(match.group(1)) >= len(kept):
            return reason
        row = kept[int(match.group(1))] + 1
        return Reason(reason.code, f"row {row}, " + reason.message[match.end():])
    return [fix(r) for r in reasons]


def _editor(uow: UoW, user: PageUser, case_id: int) -> dict[str, Any]:
    """The case, its criteria, what this person may do, and the pledge as saved."""
    with uow() as session:
        case = ensure_case_visible(session, user.principal, case_id)
        actions = engine.actions_for(session, case, user.principal.actor)
        sets = criteria_sets(session, case.subject_kind)
        codes = {c.id: c.code for g in sets for c in g["criteria"]}
        try:
            pledge = pledge_out(session, case_id)
        except NotFound:
            pledge = None
        rows = [{"criterion": codes.get(i.criterion_id, "") if i.criterion_id else "",
                 "target": i.target, "measures": i.measures,
                 "deadline_on": i.deadline_on.isoformat() if i.deadline_on else "",
                 "assessment_standard": i.assessment_standard,
                 "owner_id": str(i.owner_id or "")} for i in (pledge.items if pledge else [])]
        return {"case_id": case.id, "case_stage": case.stage, "case_status": case.status,
                "actions": actions, "criteria_sets": sets,
                "summary": pledge.summary if pledge else "", "rows": rows or [_blank()]}


def _not_editable(request: Request, case_id: int) -> Response:
    return message_page(request, 409, ("现在不能编辑", "Not editable now"), (
        "这份承诺现在不能编辑：只有起草中或被退回的承诺，由承诺人本人（单位承诺由书记、副书记或党务干事）编辑。",
        "This pledge cannot be edited now: only a draft or a returned pledge can be edited, "
        "by its subject (for a unit, its secretary, deputy or clerk)."),
        link=f"/cases/{case_id}", link_text=("返回事项", "Back to the case"))


def _page(request: Request, user: PageUser, editor: dict[str, Any], *, status: int = 200,
          reasons: list[Reason] | None = None) -> Response:
    return show(request, "pledge_edit.html", user, status=status, reasons=reasons or [],
                **editor)


@router.get("/cases/{case_id}/pledge/edit")
async def edit_form(case_id: int, request: Request, uow: UoW,
                    user: SignedIn) -> Response:
    """The editor with the pledge as saved (one blank row when it has no items)."""
    editor = await run_in_threadpool(_editor, uow, user, case_id)
    if "edit_pledge" not in editor["actions"]:
        return _not_editable(request, case_id)
    return _page(request, user, editor)


def _save(uow: UoW, clock: Clock, user: PageUser, case_id: int, data: dict[str, Any],
          submit: bool) -> str:
    with uow() as session:
        act(session, user, clock, case_id=case_id, action="edit_pledge", data=data)
        if submit:
            act(session, user, clock, case_id=case_id, action="submit")
    return "submit" if submit else "edit_pledge"


@router.post("/cases/{case_id}/pledge/edit")
async def edit(case_id: int, request: Request, uow: UoW, clock: AppClock,
               user: CsrfChecked) -> Response:
    """Add or remove a row (the form again), save the draft, or save and submit."""
    values = form_values(await request.form())
    editor = await run_in_threadpool(_editor, uow, user, case_id)
    if "edit_pledge" not in editor["actions"]:
        return _not_editable(request, case_id)
    rows = rows_from_form(values)
    editor.update(summary=values.get("summary", ""), rows=rows)
    if "add_row" in values:
        editor["rows"] = [*rows, _blank()]
        return _page(request, user, editor)
    if "remove_row" in values:
        drop = values["remove_row"]
        editor["rows"] = [r for n, r in enumerate(rows) if str(n) != drop] or [_blank()]
        return _page(request, user, editor)
    submit = values.get("op") == "submit"
    data, kept = _edit_data(editor["summary"], rows)
    try:
        done = await run_in_threadpool(_save, uow, clock, user, case_id, data, submit)
    except PledgeflowError as exc:
        if not rows:
            editor["rows"] = [_blank()]
        return _page(request, user, editor, status=422,
                     reasons=_renumber(reasons_of(exc), kept))
    count(request, "edit_pledge")
    if submit:
        count(request, "submit")
    return RedirectResponse(f"/cases/{case_id}?done={done}#pledge", status_code=303)
