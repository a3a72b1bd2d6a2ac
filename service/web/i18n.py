"""Page language: zh-CN first, English second. ``?lang=en`` switches and is remembered in a
cookie; otherwise the browser's Accept-Language decides, defaulting to Chinese."""

from __future__ import annotations

from fastapi import Request

__all__ = ["LANGS", "pick_lang", "STAGE_NAMES", "STATUS_NAMES", "ACTION_NAMES", "FULFILMENT_NAMES",
           "REASON_NAMES", "GRADE_NAMES", "label"]

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
    # the rest of the transition table, and the other events a case's timeline shows
    "open_pledge": ("开启承诺环节", "Open the pledge stage"),
    "edit_pledge": ("编辑承诺", "Edit the pledge"),
    "withdraw": ("撤回承诺", "Withdraw the pledge"),
    "publish": ("公示承诺", "Post the pledge for public notice"),
    "file_objection": ("提出异议", "File an objection"),
    "uphold_objection": ("异议成立", "Uphold the objection"),
    "dismiss_objection": ("异议不成立", "Dismiss the objection"),
    "close_notice": ("结束公示", "Close the public notice"),
    "open_review": ("开启点评环节", "Open the review stage"),
    "record_ad_hoc_review": ("随机点评", "Write an ad hoc review"),
    "open_evaluation": ("开启群众评议", "Open the mass evaluation"),
    "assign_evaluators": ("调整评议人", "Change the evaluators"),
    "extend_round": ("延长测评", "Extend the round"),
    "close_round": ("结束测评并计票", "Close and tally the round"),
    "mark_inconclusive": ("测评未达法定人数", "Mark the round inconclusive"),
    "announce_results": ("通报评议结果", "Announce the results"),
    "nominate": ("推荐", "Nominate"),
    "adjust_nomination": ("调整推荐名单", "Adjust the nomination"),
    "open_shortlist_notice": ("公示推荐名单", "Post the shortlist for public notice"),
    "decide": ("表彰决定", "Decide the commendation"),
    "record_fulfilment": ("登记践诺情况", "Record fulfilment"),
    "lapse": ("逾期关闭", "Lapse"),
    "open_case": ("建立事项", "Case opened"),
    "open_period": ("开启活动时段", "Period opened"),
    "close_period": ("结束活动时段", "Period closed"),
    "link_issued": ("发送邮件链接", "Email link sent"),
    "link_opened": ("打开邮件链接", "Email link opened"),
    "link_used": ("使用邮件链接", "Email link used"),
}
FULFILMENT_NAMES = {
    "pending": ("未开始", "Not started"), "in_progress": ("进行中", "In progress"),
    "kept": ("已兑现", "Kept"), "not_kept": ("未兑现", "Not kept"),
}
GRADE_NAMES = {
    "excellent": ("优秀", "Excellent"), "good": ("良好", "Good"), "fair": ("一般", "Fair"),
    "poor": ("较差", "Poor"),
}
#: Refusal reasons by code; pages show the name in the page language and the English detail.
REASON_NAMES = {
    "no_items": ("承诺没有任何事项", "The pledge has no items"),
    "items_incomplete": ("有事项缺少目标、措施或完成时限",
                         "Some items lack a target, measures or a deadline"),
    "comment_required": ("此操作必须填写意见", "A comment is required"),
    "own_case": ("不能对本人（本单位）的承诺作决定", "Nobody decides on their own pledge"),
    "not_submitter": ("只有提交人可以撤回", "Only the submitter may withdraw"),
    "not_allowed_in_state": ("当前环节不能进行此操作", "Not possible at this stage"),
    "role": ("您无权进行此操作", "You may not do this"),
    "invalid_field": ("填写内容有误", "A field is not valid"),
    "unknown_criterion": ("未知的评价标准", "Unknown criterion"),
    "notice_closed": ("公示期不在进行中", "The public notice is not open"),
    "no_such_item": ("没有这个承诺事项", "No such pledge item"),
    "bad_rating": ("评定等次无效", "Invalid rating"),
    "bad_ballot": ("测评票填写不完整或无效", "The ballot is incomplete or invalid"),
    "already_voted": ("您已经投过票", "You have already voted"),
    "round_closed": ("测评已结束", "The round is closed"),
    "no_such_objection": ("没有这条待处理的异议", "No such open objection"),
    "stale": ("此事项已被他人更新，请刷新后重试",
              "Someone else changed this case; reload and retry"),
    "conflict": ("同时有其他修改，请重试", "Changed at the same time; retry"),
    "csrf": ("表单已过期，请刷新页面后重试", "The form expired; reload the page and retry"),
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
