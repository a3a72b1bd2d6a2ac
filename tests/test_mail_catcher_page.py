"""The embedded default's mailbox: the real catcher (aiosmtpd on loopback, a Maildir) receives
what the dispatcher sends, and ``/dev/mail`` shows it rendered, with action links that work.
Without ``PLEDGEFLOW_MAIL_CATCHER_DIR`` (a real deployment) the pages do not exist."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from models import Notification
from notifications.catcher import count_caught, read_caught, start_catcher
from notifications.dispatcher import Dispatcher, DispatchPolicy
from notifications.smtp import SmtpTarget
from service.api.app import create_app
from service.settings import Settings
from tests import builders as b
from tests.conftest import Database
from tests.smtp_servers import free_port

BASE_URL = "http://127.0.0.1:8000"
MAIL_KEY = re.compile(r'href="/dev/mail/([^"]+)"')
LINK = re.compile(re.escape(BASE_URL) + r"(/a/[A-Za-z0-9_\-]+)")


@pytest.fixture
def caught(fresh_db: Database, tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    """A submitted pledge's emails delivered to the catcher; a client with /dev/mail on."""
    clock = b.clock_at(date(2010, 6, 1))
    with fresh_db.factory() as s, s.begin():
        b.opened_period(s, clock)
        b.drive(s, b.unit_case(s, "supply-marketing"), ("pledge", "drafting"), clock)
        # Only the submission's emails are this test's subject.
        s.execute(sa.update(Notification).values(status="sent", sent_at=clock.now()))
        b.drive(s, b.unit_case(s, "supply-marketing"), ("pledge", "submitted"), clock)
    maildir, port = tmp_path / "mail", free_port()
    catcher = start_catcher(maildir, port=port)
    try:
        dispatcher = Dispatcher(
            fresh_db.factory, smtp=SmtpTarget.from_url(f"smtp://127.0.0.1:{port}", timeout=10),
            clock=clock, base_url=BASE_URL, mail_from="pledgeflow <noreply@example.org>",
            policy=DispatchPolicy(connections=1))
        report = asyncio.run(asyncio.wait_for(dispatcher.run_once(), timeout=60))
        assert report.sent >= 1 and not report.errors, report
    finally:
        catcher.stop()
    app = create_app(Settings(database_url=fresh_db.url, dispatcher=False, base_url=BASE_URL,
                              mail_catcher_dir=str(maildir)), clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, maildir


def test_the_mailbox_lists_what_was_caught_and_its_links_work(
        caught: tuple[TestClient, Path]) -> None:
    client, maildir = caught
    listing = client.get("/dev/mail")
    assert listing.status_code == 200, listing.text
    keys = MAIL_KEY.findall(listing.text)
    assert keys, listing.text
    assert count_caught(maildir) == len(set(keys)) == len(read_caught(maildir))
    assert count_caught(maildir / "nothing-here") == 0
    assert "office.admin@example.org" in listing.text  # the superior told of the submission

    views = [client.get(f"/dev/mail/{key}") for key in keys]
    assert all(v.status_code == 200 for v in views)
    [view] = [v for v in views if "office.admin@example.org" in v.text]
    assert "<iframe" in view.text and "Message-ID" in view.text
    # The HTML part (escaped into the frame's srcdoc) and the plain part carry the same links.
    html_links = set(LINK.findall(html.unescape(view.text.split("<iframe", 1)[1]
                                                .split("</iframe>", 1)[0])))
    text_links = set(LINK.findall(view.text.split("<pre", 1)[1]))
    assert len(text_links) == 2 and html_links == text_links  # approve and return

    for path in sorted(text_links):
        page = client.get(path)  # a confirmation page: opening it changes nothing
        assert page.status_code == 200, page.text[:500]
        assert 'method="post"' in page.text.lower()


def test_an_unknown_message_is_a_readable_404(caught: tuple[TestClient, Path]) -> None:
    client, _ = caught
    response = client.get("/dev/mail/no-such-key", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert "no-such-key" in response.text


def test_without_a_catcher_there_is_no_mailbox(fresh_db: Database) -> None:
    app = create_app(Settings(database_url=fresh_db.url, dispatcher=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/dev/mail").status_code == 404
