"""notifications.mime: the bytes it writes read, with the standard parser, as the
``EmailMessage`` they replace — the same headers, the same text and HTML."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime

import pytest

from notifications.mime import build
from notifications.render import render, sample_context

NOW = datetime(2010, 6, 3, 2, 0, tzinfo=UTC)
FROM = "创先争优活动办公室 <noreply@pledgeflow.example>"


def reference(*, to: str, subject: str, lang: str, text: str, html: str) -> EmailMessage:
    """How the dispatcher built its emails before notifications.mime."""
    message = EmailMessage(policy=policy.default)
    message["From"] = FROM
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = "<42.1@pledgeflow>"
    message["Date"] = format_datetime(NOW)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Pledgeflow-Attempt"] = "3"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    message["Content-Language"] = "zh-CN" if lang == "zh" else "en"
    return message


def built(*, to: str, subject: str, lang: str, text: str, html: str) -> bytes:
    return build(mail_from=FROM, to=to, subject=subject, message_id="<42.1@pledgeflow>",
                 date=NOW, attempt=3, lang=lang, text=text, html=html).data


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


def same_reading(ours: EmailMessage, theirs: EmailMessage) -> None:
    names = ["From", "To", "Subject", "Message-ID", "Date", "Auto-Submitted",
             "X-Pledgeflow-Attempt", "MIME-Version", "Content-Language"]
    assert {n: str(ours[n]) for n in names} == {n: str(theirs[n]) for n in names}
    assert ours.get_content_type() == theirs.get_content_type() == "multipart/alternative"
    for subtype in ("plain", "html"):
        mine, reference_part = (m.get_body(preferencelist=(subtype,)) for m in (ours, theirs))
        assert mine is not None and reference_part is not None
        assert mine.get_content_type() == reference_part.get_content_type()
        assert mine.get_content_charset() == "utf-8"
        assert mine.get_content() == reference_part.get_content()


@pytest.mark.parametrize("template", ["pledge_submitted", "ballot_invitation", "reminder",
                                      "commendation_decision"])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_reads_as_the_email_message_it_replaces(template: str, lang: str) -> None:
    email = render(template, lang, sample_context(template))
    fields = dict(to="wang.jiawei@example.org", subject=email.subject, lang=lang,
                  text=email.text, html=email.html)
    raw = built(**fields)
    assert raw.isascii() and all(line.endswith(b"\r") for line in raw.split(b"\n")[:-1])
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    same_reading(parse(raw), reference(**fields))


def test_a_long_chinese_subject_folds_and_reads_back_whole() -> None:
    subject = "【创先争优】" + "请审核吴江市工业资产经营总公司再生资源公司党支部的公开承诺" * 3
    raw = built(to="a@example.org", subject=subject, lang="zh", text="正文", html="<p>正文</p>")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    assert parse(raw)["Subject"] == subject


def test_text_that_looks_like_a_boundary_or_a_dot_line_stays_in_its_part() -> None:
    text = "第一行\n.\n--==pf-0000\n结束"
    message = parse(built(to="a@example.org", subject="s", lang="en", text=text, html=text))
    assert message.get_body(preferencelist=("plain",)).get_content() == text + "\n"  # type: ignore[union-attr]


@pytest.mark.parametrize("field", ["to", "subject"])
def test_a_line_break_in_a_header_value_is_refused(field: str) -> None:
    fields = dict(to="a@example.org", subject="s", lang="zh", text="t", html="h")
    fields[field] += "\r\nBcc: everyone@example.org"
    with pytest.raises(ValueError, match="line break"):
        built(**fields)


def test_a_non_ascii_address_asks_for_smtputf8() -> None:
    ascii_ = build(mail_from=FROM, to="a@example.org", subject="s", message_id="<1@x>",
                   date=NOW, attempt=1, lang="zh", text="t", html="h")
    utf8 = build(mail_from=FROM, to="王嘉伟@例子.中国", subject="s", message_id="<1@x>",
                 date=NOW, attempt=1, lang="zh", text="t", html="h")
    assert (ascii_.smtputf8, utf8.smtputf8) == (False, True)
    assert (ascii_.sender, utf8.recipients) == ("noreply@pledgeflow.example", ("王嘉伟@例子.中国",))
    assert parse(utf8.data)["To"] == "王嘉伟@例子.中国"
