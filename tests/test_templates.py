"""Notification templates: every email, in zh-CN and English, says who, when, which stage and
by when, carries its action links, escapes what it must, and refuses to render with a hole."""

from __future__ import annotations

import copy
import html as htmllib
import re
from pathlib import Path

import jinja2
import pytest
from typer.testing import CliRunner

from notifications.cli import mail_app
from notifications.render import (
    BATCHED,
    LANGS,
    TEMPLATES,
    format_deadline,
    render,
    sample_context,
)
from service.workflow.table import TRANSITIONS

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "notifications" / "templates"
STAGES = {"pledge": ("公开承诺", "Public pledge"), "review": ("领导点评", "Leader review"),
          "evaluation": ("群众评议", "Mass evaluation"),
          "commendation": ("评选表彰", "Selection and commendation")}
# The stage each email is about (the case may already be elsewhere, e.g. closed after a decision).
STAGE_OF = {"stage_opened": "pledge", "task_assigned": "review", "pledge_submitted": "pledge",
            "pledge_returned": "pledge", "pledge_approved": "pledge", "notice_started": "pledge",
            "objection_filed": "pledge", "review_recorded": "review",
            "ballot_invitation": "evaluation", "results_announced": "evaluation",
            "commendation_shortlist": "commendation", "commendation_decision": "commendation",
            "period_rolled_over": "pledge", "reminder": "pledge", "escalation": "pledge"}
SINGLE = [t for t in TEMPLATES if t not in BATCHED and t != "period_rolled_over"]
ALL = pytest.mark.parametrize("template", TEMPLATES)
BOTH = pytest.mark.parametrize("lang", LANGS)
XSS = "<script>alert(1)</script>"
ENGLISH_CODES = re.compile(
    r"\b(pledge|review|evaluation|commendation|closed|drafting|submitted|returned|approved|"
    r"under_notice|voting|tallied|announced|commended|not_commended|none|deadline)\b", re.I)


def _first(template: str, context: dict) -> dict:
    """The case the subject line is about: the context itself, or the first item of a batch."""
    return context["items"][0] if template in BATCHED else context


def _parts(email) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"subject": email.subject, "text": email.text, "html": htmllib.unescape(email.html)}


def _visible(html: str) -> str:
    """What a reader sees of an HTML part: no tags, attributes or entities."""
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", html))


# --- every template, both languages, all parts ----------------------------------------------


@ALL
@BOTH
def test_every_template_renders_three_parts(template: str, lang: str) -> None:
    email = render(template, lang, sample_context(template))
    assert email.subject and "\n" not in email.subject
    assert email.text.strip() and email.html.strip()
    assert email.html.startswith("<!DOCTYPE html>")
    assert f'<html lang="{"zh-CN" if lang == "zh" else "en"}">' in email.html
    for forbidden in ("<img", "<script", "<link", "src=", "url("):
        assert forbidden not in email.html  # no images, scripts or external assets


@ALL
def test_each_template_has_its_files_in_both_languages(template: str) -> None:
    for lang in LANGS:
        for suffix in ("subject.txt", "txt", "html"):
            assert (TEMPLATE_DIR / lang / f"{template}.{suffix}").is_file()


@ALL
@BOTH
def test_every_part_names_unit_period_stage_and_deadline(template: str, lang: str) -> None:
    context = sample_context(template)
    case = _first(template, context)
    i = LANGS.index(lang)
    deadline = case["pledge_due_on"] if template == "period_rolled_over" else case["due_at"]
    expected = [case[f"unit_{lang}"], case[f"period_{lang}"], STAGES[STAGE_OF[template]][i],
                format_deadline(deadline, lang)]
    for part, body in _parts(render(template, lang, context)).items():
        for value in expected:
            assert value in body, f"{template}/{lang}/{part} lacks {value!r}"


@pytest.mark.parametrize("template", SINGLE)
@BOTH
def test_deadline_is_shown_in_shanghai_time(template: str, lang: str) -> None:
    context = sample_context(template) | {"due_at": "2010-10-08T09:30:00Z"}
    expected = {"zh": "2010年10月8日 17:30", "en": "8 Oct 2010, 17:30"}[lang]
    for part, body in _parts(render(template, lang, context)).items():
        assert expected in body, f"{template}/{lang}/{part}"


def test_deadline_formatting() -> None:
    assert format_deadline("2010-09-17T16:00:00+00:00", "zh") == "2010年9月17日 24:00"
    assert format_deadline("2010-09-17T16:00:00+00:00", "en") == "17 Sep 2010, 24:00"
    assert format_deadline("2010-09-17", "zh") == "2010年9月17日 24:00"  # a day: its end
    assert format_deadline("2010-09-17T01:05:00", "en") == "17 Sep 2010, 09:05"  # naive is UTC
    assert (format_deadline(None, "zh"), format_deadline(None, "en")) == ("无", "none")


@pytest.mark.parametrize("template", ["pledge_approved", "commendation_decision"])
@BOTH
def test_missing_deadline_reads_none(template: str, lang: str) -> None:
    email = render(template, lang, sample_context(template) | {"due_at": None})
    label = {"zh": "截止时间：无", "en": "Deadline: none"}[lang]
    assert label in email.subject
    assert {"zh": "：无", "en": ": none"}[lang] in email.text


def test_member_case_names_the_member_and_the_unit() -> None:
    context = sample_context("review_recorded") | {"subject_name": "张明华"}
    zh, en = render("review_recorded", "zh", context), render("review_recorded", "en", context)
    assert "张明华（吴江供电公司党委）" in zh.subject and "党员：张明华" in zh.text
    assert "张明华 (Party Committee of the Wujiang Power Supply Company)" in en.subject
    assert "Member: 张明华" in en.text


# --- escaping and strictness ----------------------------------------------------------------


@ALL
@BOTH
def test_html_escapes_what_text_keeps_literal(template: str, lang: str) -> None:
    context = copy.deepcopy(sample_context(template))
    _first(template, context).update(unit_zh=XSS, unit_en=XSS, subject_name=XSS)
    email = render(template, lang, context)
    assert XSS not in email.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert XSS in email.text and XSS in email.subject


@BOTH
def test_comment_and_link_labels_are_escaped(lang: str) -> None:
    link = {"label_zh": "<b>批准</b>", "label_en": "<b>Approve</b>",
            "url": 'https://pledgeflow.example.org/a/t?x=1&y="2"'}
    context = sample_context("pledge_returned") | {"comment": "<i>太笼统</i>", "links": [link]}
    email = render("pledge_returned", lang, context)
    assert "<i>" not in email.html and "&lt;i&gt;太笼统&lt;/i&gt;" in email.html
    assert "<b>" not in email.html
    assert 'href="https://pledgeflow.example.org/a/t?x=1&amp;y=&#34;2&#34;"' in email.html
    assert "<i>太笼统</i>" in email.text


@ALL
@BOTH
def test_missing_key_fails_the_render(template: str, lang: str) -> None:
    for key in (f"period_{lang}", "links", "case_url"):
        context = copy.deepcopy(sample_context(template))
        del _first(template, context)[key]
        with pytest.raises(jinja2.UndefinedError):
            render(template, lang, context)


@pytest.mark.parametrize("template", SINGLE)
def test_missing_unit_or_deadline_fails_the_render(template: str) -> None:
    for key in ("unit_zh", "subject_name", "due_at"):
        context = sample_context(template)
        del context[key]
        with pytest.raises(jinja2.UndefinedError):
            render(template, "zh", context)


def test_unknown_template_or_language_is_a_value_error_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known templates: stage_opened, .*period_rolled_over"):
        render("pledge_sent", "zh", {})
    with pytest.raises(ValueError, match="known languages: zh, en"):
        render("reminder", "fr", sample_context("reminder"))
    with pytest.raises(ValueError, match="unknown template"):
        sample_context("nope")


# --- links ----------------------------------------------------------------------------------


@ALL
@BOTH
def test_every_link_and_the_case_url_appear_in_both_parts(template: str, lang: str) -> None:
    context = sample_context(template)
    email = render(template, lang, context)
    cases = context["items"] if template in BATCHED else [context]
    for case in cases:
        assert case["links"], "sample data carries links"
        for link in case["links"]:
            assert link["url"] in email.text and f'href="{link["url"]}"' in email.html
            label = link[f"label_{lang}"]
            colon = "：" if lang == "zh" else ": "
            assert f"{label}{colon}{link['url']}" in email.text
            assert f">{label}</a>" in email.html
        assert case["case_url"] in email.text and f'href="{case["case_url"]}"' in email.html


@pytest.mark.parametrize("template", SINGLE)
def test_no_links_means_no_action_section(template: str) -> None:
    email = render(template, "zh", sample_context(template) | {"links": []})
    assert "请直接办理" not in email.text and "/a/" not in email.html


# --- language ------------------------------------------------------------------------------


@ALL
def test_zh_shows_no_english_codes(template: str) -> None:
    context = sample_context(template)
    if template == "commendation_decision":
        context["stage"] = "closed"  # what the outbox really carries after a decision
    email = render(template, "zh", context)
    for part in (email.subject, email.text, _visible(email.html)):
        visible = re.sub(r"https?://\S+", " ", part)
        assert not ENGLISH_CODES.search(visible), ENGLISH_CODES.search(visible)


@BOTH
def test_commendation_decision_depends_on_the_outcome(lang: str) -> None:
    yes = render("commendation_decision", lang,
                 sample_context("commendation_decision") | {"status": "commended"})
    no = render("commendation_decision", lang,
                sample_context("commendation_decision") | {"status": "not_commended"})
    assert yes.subject != no.subject
    assert ("获得表彰" if lang == "zh" else "Congratulations") in yes.text
    assert ("获得表彰" if lang == "zh" else "Congratulations") not in no.text


# --- batches and rollover -------------------------------------------------------------------


@pytest.mark.parametrize("template", sorted(BATCHED))
@BOTH
def test_batch_lists_every_item(template: str, lang: str) -> None:
    context = sample_context(template)
    assert len(context["items"]) == 3
    email = render(template, lang, context)
    for n, item in enumerate(context["items"], start=1):
        assert f"\n{n}. " in email.text
        for body in (email.text, email.html):
            assert item[f"unit_{lang}"] in body and item["case_url"] in body
    assert email.html.count("<li ") == 3
    assert ("等3项" if lang == "zh" else "and 2 more") in email.subject
    assert "张明华" in email.text  # the member item names the member
    assert STAGES["review"][LANGS.index(lang)] in email.text  # items keep their own stage


@pytest.mark.parametrize("template", sorted(BATCHED))
def test_single_case_context_is_a_batch_of_one(template: str) -> None:
    context = sample_context("ballot_invitation")  # outbox row + dispatcher fields, no items
    email = render(template, "zh", context)
    assert "吴江供电公司党委" in email.subject and "等" not in email.subject
    assert "群众评议" in email.text and "\n1. " in email.text
    with pytest.raises(ValueError, match="at least one item"):
        render(template, "zh", {"items": []})


@BOTH
def test_rollover_without_a_unit_addresses_everyone(lang: str) -> None:
    # What periods._tell_everyone writes, plus what the dispatcher adds for a case-less row.
    context = {"period_zh": "第二时段（2011年1月至6月）",
               "period_en": "Period 2 (January–June 2011)", "starts_on": "2011-01-01",
               "pledge_due_on": "2011-02-25", "links": [], "case_url": "http://127.0.0.1:8000"}
    email = render("period_rolled_over", lang, context)
    assert ("各单位、各位党员" if lang == "zh" else "Every unit and Party member") in email.text
    assert ("2011年1月1日" if lang == "zh" else "1 Jan 2011") in email.text
    assert format_deadline("2011-02-25", lang) in email.subject


# --- coverage of the producers ----------------------------------------------------------------


def test_every_template_a_producer_uses_exists() -> None:
    used = {n.template for t in TRANSITIONS for n in t.notify}
    used |= {"period_rolled_over", "reminder", "escalation", "commendation_shortlist"}
    assert used <= set(TEMPLATES), used - set(TEMPLATES)


# --- the preview command ----------------------------------------------------------------------


@pytest.mark.parametrize("part", ["text", "html", "both"])
def test_preview_prints_subject_and_parts(part: str) -> None:
    result = CliRunner().invoke(mail_app, ["preview", "pledge_submitted", "--lang", "zh",
                                           "--part", part])
    assert result.exit_code == 0, result.output
    email = render("pledge_submitted", "zh", sample_context("pledge_submitted"))
    assert f"Subject: {email.subject}" in result.output
    assert ("公开承诺待您审核\n\n您好：" in result.output) == (part in ("text", "both"))
    assert ("<!DOCTYPE html>" in result.output) == (part in ("html", "both"))


def test_preview_in_english() -> None:
    result = CliRunner().invoke(mail_app, ["preview", "reminder", "--lang", "en"])
    assert result.exit_code == 0, result.output
    assert "Subject: [Reminder]" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["preview", "pledge_sent"], "unknown template 'pledge_sent'; known templates: stage_opened"),
    (["preview", "reminder", "--lang", "fr"], "unknown language 'fr'"),
    (["preview", "reminder", "--part", "pdf"], "unknown part 'pdf'"),
])
def test_preview_rejects_bad_input_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(mail_app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_macro_modules_are_made_once_per_language_not_once_per_render() -> None:
    # Imported "with context", Jinja makes the macros' module afresh on every render.
    from notifications.render import _ENVIRONMENTS

    root = Path(__file__).parents[1] / "notifications" / "templates"
    with_context = [str(f.relative_to(root)) for f in sorted(root.rglob("*"))
                    if f.is_file() and re.search(r"import[^%]*with context", f.read_text())]
    assert with_context == []
    for lang in LANGS:
        render("pledge_submitted", lang, sample_context("pledge_submitted"))
        modules = {name: _ENVIRONMENTS[lang].get_template(name)._module
                   for name in ("_macros.txt", "_macros.html")}
        assert all(m is not None for m in modules.values()), modules
        render("ballot_invitation", lang, sample_context("ballot_invitation"))
        assert {name: _ENVIRONMENTS[lang].get_template(name)._module
                for name in modules} == modules
        assert modules["_macros.txt"].pick("甲", "A") == ("甲" if lang == "zh" else "A")
