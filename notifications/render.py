"""Render notification emails — subject, plain text and HTML — in zh-CN (first) or English.

Each template is three files under ``notifications/templates/<lang>/``: ``<name>.subject.txt``,
``<name>.txt`` and ``<name>.html``; they extend the shared layouts beside them (``_layout.*``,
``_case.*``, ``_batch.*``). Only ``.html`` files are autoescaped, and undefined names raise, so a
missing context key fails the render instead of mailing an email with a hole in it. The context
each template needs is documented in ``notifications/templates/README.md``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape

from service.clock import CAMPAIGN_TZ, end_of_day

__all__ = ["render", "sample_context", "RenderedEmail", "TEMPLATES", "LANGS", "BATCHED",
           "STAGE_NAMES", "stage_name", "format_deadline", "format_day"]

TEMPLATES: tuple[str, ...] = (
    "stage_opened", "task_assigned", "pledge_submitted", "pledge_returned", "pledge_approved",
    "notice_started", "objection_filed", "review_recorded", "ballot_invitation", "reminder",
    "escalation", "results_announced", "commendation_shortlist", "commendation_decision",
    "period_rolled_over")
LANGS: tuple[str, ...] = ("zh", "en")
#: Templates that list many cases (``items``); a single case's context is a batch of one.
BATCHED = frozenset({"reminder", "escalation"})
STAGE_NAMES: dict[str, tuple[str, str]] = {
    "pledge": ("公开承诺", "Public pledge"),
    "review": ("领导点评", "Leader review"),
    "evaluation": ("群众评议", "Mass evaluation"),
    "commendation": ("评选表彰", "Selection and commendation"),
    "closed": ("已结束", "Closed"),
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_PARTS = ("subject.txt", "txt", "html")


@dataclass(frozen=True)
class RenderedEmail:
    """One email, ready for ``EmailMessage``: a one-line subject and two bodies."""

    subject: str
    text: str
    html: str


def _day_text(day: date, lang: str) -> str:
    return (f"{day.year}年{day.month}月{day.day}日" if lang == "zh"
            else f"{day.day} {_MONTHS[day.month - 1]} {day.year}")


def format_deadline(value: Any, lang: str) -> str:
    """A deadline in Asia/Shanghai time: ``2010年9月17日 24:00`` / ``17 Sep 2010, 24:00``.

    Accepts an ISO instant (UTC if naive), a datetime, or a calendar date (its deadline is the
    end of that day). Midnight is shown as 24:00 of the day before, as the campaign's notices
    write it; None is ``无`` / ``none``.
    """
    if value is None:
        return "无" if lang == "zh" else "none"
    if not isinstance(value, date):
        text = str(value)  # an undefined value raises here (StrictUndefined)
        value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    if not isinstance(value, datetime):
        value = datetime.combine(value + timedelta(days=1), time.min, CAMPAIGN_TZ)
    local = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(CAMPAIGN_TZ)
    day, clock = local.date(), local.strftime("%H:%M")
    if local.time() == time.min:
        day, clock = day - timedelta(days=1), "24:00"
    return f"{_day_text(day, lang)}{' ' if lang == 'zh' else ', '}{clock}"


def format_day(value: Any, lang: str) -> str:
    """A calendar date (ISO string or date): ``2011年1月1日`` / ``1 Jan 2011``."""
    return _day_text(value if isinstance(value, date) else date.fromisoformat(str(value)), lang)


def stage_name(code: Any, lang: str) -> str:
    """The stage's name in a language (公开承诺 / Public pledge); ValueError if unknown."""
    if str(code) not in STAGE_NAMES:
        raise ValueError(f"unknown stage {code!r}; known: {', '.join(STAGE_NAMES)}")
    return STAGE_NAMES[str(code)][LANGS.index(lang)]


def _localized(fn: Callable[[Any, str], str]) -> Callable[..., str]:
    """A filter that formats in the language being rendered (the ``lang`` variable)."""
    return pass_context(lambda ctx, value: fn(value, ctx["lang"]))


def _environment(lang: str) -> Environment:
    """The templates of one language. ``lang`` is a global of the environment, so the layouts
    import their macros without context and Jinja makes each macro module once, instead of
    once per render as an import ``with context`` does."""
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        # Templates change with a deploy, not while the process runs: without this every
        # render stats each file of its chain (~20 stat calls an email) to see if it changed.
        auto_reload=False)
    env.globals["lang"] = lang
    env.filters.update(stage_name=_localized(stage_name), deadline=_localized(format_deadline),
                       day=_localized(format_day))
    return env


_ENVIRONMENTS = {lang: _environment(lang) for lang in LANGS}


def _check(template: str, lang: str = "zh") -> None:
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; known templates: {', '.join(TEMPLATES)}")
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; known languages: {', '.join(LANGS)}")


def render(template: str, lang: str, context: Mapping[str, Any]) -> RenderedEmail:
    """Render one template in one language; ValueError for an unknown name or language.

    A missing context key raises ``jinja2.UndefinedError``. For the batched templates
    (``reminder``, ``escalation``) a context without ``items`` is treated as one item.
    """
    _check(template, lang)
    values = dict(context)
    if template in BATCHED:
        values.setdefault("items", [dict(context)])
        if not values["items"]:
            raise ValueError(f"{template!r} needs at least one item")
    values.update(lang=lang, template=template)
    env = _ENVIRONMENTS[lang]
    subject, text, html = (env.get_template(f"{lang}/{template}.{part}").render(values)
                           for part in _PARTS)
    text = re.sub(r"\n{3,}", "\n\n", text.strip())  # layouts may leave extra blank lines
    return RenderedEmail(" ".join(subject.split()), text + "\n", html.strip() + "\n")


# --- sample data (preview command, tests) ----------------------------------------------------

_BASE = "https://pledgeflow.example.org"
_UNIT = {"unit_zh": "吴江供电公司党委", "subject_name": "吴江供电公司党委",
         "unit_en": "Party Committee of the Wujiang Power Supply Company"}
_PERIOD = {"period_zh": "第一时段（2010年6月至2010年底）",
           "period_en": "Period 1 (June–December 2010)"}
_SAMPLES = {  # template: "action stage status deadline-day|first link zh|first link en"
    "stage_opened": "open_pledge pledge drafting 2010-09-17|提交承诺|Submit the pledge",
    "task_assigned": "open_review review open 2010-11-05|填写点评|Write the review",
    "pledge_submitted": "submit pledge submitted 2010-09-24|批准承诺|Approve the pledge",
    "pledge_returned": "return pledge returned 2010-09-17|提交承诺|Submit the pledge",
    "pledge_approved": "approve pledge approved -|查看承诺|View the pledge",
    "notice_started": "publish pledge under_notice 2010-09-27|查看公示|View the public notice",
    "objection_filed": "file_objection pledge under_notice 2010-09-27|处理异议|Resolve it",
    "review_recorded": "record_review review recorded 2010-11-14|确认点评并提交整改计划|"
                       "Acknowledge with a rectification plan",
    "ballot_invitation": "open_evaluation evaluation voting 2010-12-03|填写测评票|Cast your ballot",
    "results_announced": "announce_results evaluation announced -|查看评议结果|View the results",
    "commendation_shortlist": "open_shortlist_notice commendation under_notice 2010-12-24|"
                              "查看公示名单|View the shortlist",
    "commendation_decision": "decide closed commended -|查看表彰名单|View the commendations",
}
_COMMENTS = {
    "pledge_returned": "第3项承诺“降低线损率”目标不够具体，请量化并注明完成时限。",
    "pledge_approved": "承诺具体可行，同意公示。",
    "objection_filed": "承诺中“优质服务”一项与实际不符，客户报修仍需多日才能处理。",
    "review_recorded": "迎峰度夏保供电成绩突出；农网改造进度偏慢，需加快。",
}


def _links(key: str, zh: str, en: str) -> list[dict[str, str]]:
    """Two action links; the token is a stable stand-in so previews do not change."""
    pairs = ((zh, en), ("查看公示栏", "Open the bulletin board"))
    return [{"label_zh": label_zh, "label_en": label_en,
             "url": f"{_BASE}/a/{hashlib.sha256(f'{key}:{i}'.encode()).hexdigest()[:43]}"}
            for i, (label_zh, label_en) in enumerate(pairs)]


def _case(template: str, case_id: int, **overrides: Any) -> dict[str, Any]:
    spec, zh, en = _SAMPLES[template].split("|")
    action, stage, status, day = spec.split()
    due_at = None if day == "-" else end_of_day(date.fromisoformat(day)).isoformat()
    return {"action": action, "case_id": case_id, "stage": stage, "status": status, **_UNIT,
            **_PERIOD, "due_at": due_at, "comment": _COMMENTS.get(template),
            "links": _links(f"{template}:{case_id}", zh, en),
            "case_url": f"{_BASE}/cases/{case_id}", **overrides}


def sample_context(template: str) -> dict[str, Any]:
    """Realistic sample data for a template (seed unit and period, two action links)."""
    _check(template)
    if template == "period_rolled_over":
        return {"unit_zh": _UNIT["unit_zh"], "unit_en": _UNIT["unit_en"],
                "period_zh": "第二时段（2011年1月至6月）", "starts_on": "2011-01-01",
                "period_en": "Period 2 (January–June 2011)", "pledge_due_on": "2011-02-25",
                "links": _links(template, "起草承诺", "Draft the pledge"),
                "case_url": f"{_BASE}/cases/118"}
    if template in BATCHED:  # items come soonest deadline first
        post = {"unit_zh": "吴江邮政局党委",
                "unit_en": "Party Committee of the Wujiang Post Office"}
        telecom = {"unit_zh": "电信吴江分公司党委", "subject_name": "电信吴江分公司党委",
                   "unit_en": "Party Committee of the Wujiang Branch of China Telecom"}
        return {"items": [_case("stage_opened", 42),
                          _case("stage_opened", 57, subject_name="张明华", **post),
                          _case("task_assigned", 63, **telecom)]}
    return _case(template, 42)
