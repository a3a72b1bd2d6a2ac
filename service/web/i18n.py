"""Page language: zh-CN first, English second. ``?lang=en`` switches and is remembered in a
cookie; otherwise the browser's Accept-Language decides, defaulting to Chinese."""

from __future__ import annotations

from fastapi import Request

__all__ = ["LANGS", "pick_lang", "STAGE_NAMES", "STATUS_NAMES", "ACTION_NAMES", "label"]

LANGS = ("zh", "en")
LANG_COOKIE = "pf_lang"

STAGE_NAMES = {
    "pledge": ("公开承诺", "Public pledge"), "review": ("领导点评", "Leader review"),
    "evaluation": ("群众评议", "Mass evaluation"),
    "commendation": ("评选表彰", "Selection and commendation"), "closed": ("已结束", "Closed"),
}
STATUS_NAMES = {
    "pending": ("未开始", "Not started"), "drafting": ("起草中", "Drafting"),
    "submitted": ("已提交待审", "Submitted"), "returned": ("已退回", "Returned"),
    "approved": ("已批准", "Approved"), "under_notice": ("公示中", "Under public notice"),
    "done": ("已完成", "Done"), "open": ("进行中", "Open"), "recorded": ("已点评", "Reviewed"),
    "acknowledged": ("已确认", "Acknowledged"), "voting": ("测评中", "Voting"),
    "tallied": ("已计票", "Tallied"), "inconclusive": ("未达法定人数", "Inconclusive"),
    "announced": ("已通报", "Announced"), "considered": ("评选中", "Under consideration"),
    "commended": ("受表彰", "Commended"), "not_commended": ("未获表彰", "Not commended"),
    "lapsed": ("已逾期关闭", "Lapsed"),
}
ACTION_NAMES = {
    "approve": ("批准承诺", "Approve the pledge"), "return": ("退回修改", "Return for revision"),
    "cast_ballot": ("填写测评票", "Cast a ballot"),
    "record_review": ("填写点评", "Write the review"),
    "acknowledge_review": ("确认点评", "Acknowledge the review"),
    "submit": ("提交承诺", "Submit the pledge"),
}


def label(table: dict[str, tuple[str, str]], key: str, lang: str) -> str:
    """The zh or en name of a stage, status or action (the code itself when unknown)."""
    names = table.get(key)
    return key if names is None else names[0 if lang == "zh" else 1]


def pick_lang(request: Request, default: str | None = None) -> str:
    """The language for this page."""
    asked = request.query_params.get("lang")
    if asked in LANGS:
        return asked
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in LANGS:
        return cookie
    if default in LANGS:
        return default  # type: ignore[return-value]
    accept = request.headers.get("accept-language", "").lower()
    return "en" if accept.startswith("en") else "zh"
