"""The progress dashboard (``/office/dashboard/{period_code}``) and the office's downloads.

Three figures, each an inline SVG bar chart drawn on the server (with ``<title>`` and
``<desc>``, no JavaScript) beside a table of the same numbers: cases per stage and status,
overdue cases per unit, and satisfaction per unit from tallied or announced rounds.

Downloads (office and auditors): the evaluation results
(``/office/dashboard/{code}/results.csv|xlsx``) and the commendation lists
(``/office/commendations/{code}/list.csv|xlsx``), with Chinese headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from service import office_reports as reports
from service.api.deps import UoW
from service.errors import NotFound
from service.periods import get_period
from service.web import i18n
from service.web.i18n import pick_lang
from service.web.routes.office_home import OfficeViewer, office_page
from service.web.session import PRIVATE, PageRoute

router = APIRouter(include_in_schema=False, route_class=PageRoute)

MEDIA = {"csv": "text/csv; charset=utf-8",
         "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
CHART_ROWS = 20
BAR_MAX = 320  # of the 640-wide drawing, after 236 for the labels, before the value


@dataclass(frozen=True)
class Bar:
    label: str
    full: str
    shown: str
    y: int
    width: int


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    desc: str
    bars: list[Bar]
    height: int


def _fit(label: str, room: float = 13.0) -> str:
    """A label cut to fit the chart's label column (a CJK character is about two Latin ones)."""
    used = 0.0
    for i, ch in enumerate(label):
        used += 1.0 if ord(ch) > 0x2E80 else 0.55
        if used > room:
            return label[:max(i - 1, 1)] + "…"
    return label


def bar_chart(chart_id: str, title: str, desc: str, items: list[tuple[str, float, str]],
              top: float | None = None) -> Chart:
    """Horizontal bars for (label, value, value as shown); at most ``CHART_ROWS`` of them."""
    items = items[:CHART_ROWS]
    top = top or max((value for _, value, _ in items), default=0) or 1
    bars = [Bar(_fit(label), label, shown, 6 + i * 30,
                max(round(value / top * BAR_MAX), 1 if value else 0))
            for i, (label, value, shown) in enumerate(items)]
    return Chart(chart_id, title, desc, bars, 12 + 30 * len(bars))


def _name(figure: reports.UnitFigure, lang: str) -> str:
    return figure.name_zh if lang == "zh" else figure.name_en


@router.get("/office/dashboard/{code}")
def dashboard(code: str, request: Request, uow: UoW, office: OfficeViewer) -> Response:
    """Progress of a period: stages, overdue cases and satisfaction, as charts and tables."""
    now = request.app.state.clock.now()
    with uow() as session:
        period = get_period(session, code)
        stages = reports.stage_counts(session, period.id)
        overdue = reports.overdue_by_unit(session, period.id, now)
        satisfaction = reports.satisfaction_by_unit(session, period.id)
    lang = pick_lang(request, office.user.lang)
    zh = lang == "zh"

    def label(s: reports.StageCount) -> str:
        return (f"{i18n.label(i18n.STAGE_NAMES, s.stage, lang)} · "
                f"{i18n.label(i18n.STATUS_NAMES, s.status, lang)}")

    total = sum(s.count for s in stages)
    charts = {
        "stages": bar_chart(
            "chart-stages", "各环节、状态的事项数" if zh else "Cases per stage and status",
            (f"共{total}个事项，按环节和状态分列。" if zh else
             f"{total} cases by stage and status.") + ("详细数字见旁边的表格。" if zh else
                                                      " The table beside lists the numbers."),
            [(label(s), s.count, str(s.count)) for s in stages]),
        "overdue": bar_chart(
            "chart-overdue", "各单位逾期事项数" if zh else "Overdue cases per unit",
            (f"{len(overdue)}个单位有逾期事项，最多的在前。" if zh else
             f"{len(overdue)} units have overdue cases, most first."),
            [(_name(f, lang), f.value, f"{int(f.value)}") for f in overdue]),
        "satisfaction": bar_chart(
            "chart-satisfaction", "各单位群众评议满意率" if zh else "Satisfaction per unit",
            (f"{len(satisfaction)}个单位已计票，满意率从高到低。" if zh else
             f"{len(satisfaction)} units tallied, highest rate first."),
            [(_name(f, lang), f.value, f"{f.value * 100:.1f}%") for f in satisfaction], top=1.0),
    }
    return office_page(request, "office/dashboard.html", office, period=period, stages=stages,
                       stage_label=label, total=total, overdue=overdue,
                       satisfaction=satisfaction, charts=charts, now=now)


def _download(uow: UoW, code: str, fmt: str, make: Callable[[Session, Any], reports.Table],
              stem: str) -> Response:
    if fmt not in MEDIA:
        raise NotFound(f"unknown format {fmt!r}")
    with uow() as session:
        period = get_period(session, code)
        table = make(session, period)
    body = reports.to_csv(table) if fmt == "csv" else reports.to_xlsx(table)
    name = f"{stem}-{re.sub(r'[^A-Za-z0-9._-]', '_', period.code)}.{fmt}"
    return Response(body, media_type=MEDIA[fmt], headers={
        **PRIVATE, "Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/office/dashboard/{code}/results.{fmt}")
def results_download(code: str, fmt: str, uow: UoW, office: OfficeViewer) -> Response:
    """Every evaluation round of the period with turnout and satisfaction (CSV or XLSX)."""
    return _download(uow, code, fmt, reports.results_table, "results")


@router.get("/office/commendations/{code}/list.{fmt}")
def list_download(code: str, fmt: str, uow: UoW, office: OfficeViewer) -> Response:
    """Every award's candidates, ranked, with reasons and decisions (CSV or XLSX)."""
    return _download(uow, code, fmt, reports.commendation_table, "commendations")
