"""Import organizations or people from CSV (``/office/import``).

Two steps, no JavaScript: upload the file and *check* it (a dry run that writes nothing and
lists accepted and rejected rows, each rejected row with every reason), then *import* — the
check's page carries the file back in a hidden field with a fingerprint of the accepted rows.
The import checks the file again in its one transaction: if the accepted rows are no longer
exactly those shown (someone changed the directory meanwhile), nothing is written and the new
check is shown; otherwise all accepted rows are written, or — on any failure — none.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service import office_import as importer
from service.api.deps import AppClock, UoW
from service.clock import Clock
from service.office import Why
from service.web.routes.office_home import OfficeAdmin, OfficeForm, OfficeUser, office_page
from service.web.session import PageRoute

router = APIRouter(include_in_schema=False, route_class=PageRoute)

KIND_NAMES = {"organizations": ("组织", "Organizations"), "people": ("人员", "People")}
#: Column help for the page: column -> (zh, en) description.
COLUMN_HELP = {
    "code": ("组织编码：字母、数字和 . _ -，全系统唯一", "Unique code: letters, digits, . _ -"),
    "name_zh": ("中文名称", "Chinese name"),
    "name_en": ("英文名称（可不填，默认用中文名称）", "English name (optional)"),
    "kind": ("类别：党委 / 党总支 / 党支部（或 committee / general_branch / branch）",
             "committee, general_branch or branch (or 党委 / 党总支 / 党支部)"),
    "parent_code": ("上级组织编码：系统中已有，或在本文件前面的行中", "Parent's code: existing, "
                    "or on an earlier line of the file"),
    "name": ("姓名", "Name"),
    "email": ("电子邮箱，全系统唯一（评议链接发到这里）", "E-mail, unique (ballot links go here)"),
    "organization_code": ("所在组织编码（须已存在）", "Code of their organization (existing)"),
    "roles": ("职务，可多个，用分号或顿号分隔：书记、副书记、党务干事、党员、党员代表、职工代表",
              "Roles, separated by ';': secretary, deputy, clerk, member, "
              "member_representative, worker_representative"),
    "party_member": ("是否党员：是 / 否（不填为是）", "Party member: yes / no (default yes)"),
    "lang": ("通知语言：zh / en（不填为 zh）", "Notification language: zh / en (default zh)"),
}


def _columns() -> dict[str, list[dict[str, Any]]]:
    return {kind: [{"name": name, "required": required, "headers": aliases,
                    "help": COLUMN_HELP[name]} for name, required, aliases in cols]
            for kind, cols in importer.COLUMNS.items()}


def _show(request: Request, office: OfficeUser, *, status: int = 200, **context: Any) -> Response:
    context = {"kind": "organizations", "report": None, "text": "", "imported": None,
               "problems": [], **context}
    return office_page(request, "office/import.html", office, status=status,
                       columns=_columns(), kinds=KIND_NAMES,
                       max_kb=request.app.state.settings.max_body_bytes // 1024, **context)


@router.get("/office/import")
def import_page(request: Request, office: OfficeAdmin) -> Response:
    """The upload form, with the columns each file takes."""
    return _show(request, office)


async def _text_of(form: Any) -> str:
    """The uploaded file's text, or the text a check carried back (the request size limit
    of the app bounds both)."""
    upload = form.get("file")
    if isinstance(upload, UploadFile) and upload.filename:
        return importer.decode(await upload.read())
    text = form.get("csv_text")
    return text if isinstance(text, str) else ""


def _run(request: Request, uow: UoW, clock: Clock, office: OfficeUser, *, kind: str, text: str,
         mode: str, digest: str) -> Response:
    if not text.strip():
        return _show(request, office, kind=kind, status=422, problems=[Why(
            "no_file", "choose a CSV file", "请选择要导入的CSV文件")])
    try:
        with uow() as session:
            report = importer.check(session, kind, text)
            if mode != "import":
                return _show(request, office, kind=kind, report=report, text=text)
            changed = bool(digest) and digest != report.digest()
            if changed or not report.accepted:
                problems = [Why("changed_since_check", "the directory changed since the check: "
                                "nothing was imported; check the new result and import again",
                                "检查之后系统中的数据有变化，未导入任何数据；请核对新的检查结果后重新导入")
                            ] if changed else [Why("nothing_to_import", "no row can be imported",
                                                   "没有可以导入的行")]
                return _show(request, office, kind=kind, report=report, text=text,
                             problems=problems, status=422)
            count = importer.apply(session, report, actor=office.user.principal.actor,
                                   now=clock.now())
    except IntegrityError:
        return _show(request, office, kind=kind, text=text, status=409, problems=[Why(
            "conflict", "someone changed the directory at the same time; nothing was imported",
            "同时有其他人修改了组织或人员，未导入任何数据，请重新检查")])
    return _show(request, office, kind=kind, report=report, imported=count)


@router.post("/office/import")
async def import_file(request: Request, uow: UoW, clock: AppClock, office: OfficeForm
                      ) -> Response:
    """Check the file (``mode=check``) or import its accepted rows (``mode=import``)."""
    form = await request.form()
    kind = form.get("kind")
    kind = kind if isinstance(kind, str) and kind in importer.COLUMNS else "organizations"
    mode = form.get("mode")
    digest = form.get("digest")
    text = await _text_of(form)
    return await run_in_threadpool(
        _run, request, uow, clock, office, kind=kind, text=text,
        mode=mode if isinstance(mode, str) else "check",
        digest=digest if isinstance(digest, str) else "")
