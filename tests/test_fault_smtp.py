"""The SMTP server down for 60 s under load: every notification is delivered afterwards.

The outbox dispatcher runs as the service runs it — inside ``pledgeflow serve`` (a real
subprocess on a fresh ``pledgeflow_fault_…`` PostgreSQL database) — and delivers to a real
aiosmtpd server on loopback (``tests/smtp_servers.py``). Approvals over HTTP enqueue a
``pledge_approved`` email each. The server is stopped for 60 s (the issue's figure) while more
approvals arrive, then started again on the same port. Afterwards every notification row is
``sent``, every one arrived, nothing arrived that the outbox does not hold, and a Message-ID
seen twice is a recognisable re-send (a different ``X-Pledgeflow-Attempt``).

The retry schedule is shortened through settings (``PLEDGEFLOW_OUTBOX_BACKOFF_BASE`` /
``_CAP``) so recovery is prompt, and attempts raised so 60 s of refusals cannot exhaust them:
with the defaults (30 s, doubling, 8 attempts) a 60 s outage costs at most three attempts, but
the last retry may come ~3 minutes after the server is back.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.db import make_engine
from tests import fault_support, smtp_servers
from tests.fault_support import Load, Service, prepare

pytestmark = pytest.mark.fault

pg_url = fault_support.pg_url
smtp = smtp_servers.smtp

OUTAGE_SECONDS = 60.0
BEFORE, DURING = 60, 240  # approvals before and during the outage


def _outbox(url: str) -> dict[str, tuple[str, int, int | None]]:
    """Message-ID -> (status, attempts, case id) of every notification."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT message_id, status, attempts, case_id "
                                        "FROM notification")).all()
    finally:
        engine.dispose()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _wait_all_sent(url: str, timeout: float) -> dict[str, tuple[str, int, int | None]]:
    deadline = time.monotonic() + timeout
    while True:
        outbox = _outbox(url)
        if all(status == "sent" for status, _, _ in outbox.values()) or \
                time.monotonic() > deadline:
            return outbox
        time.sleep(0.5)


def test_sixty_seconds_without_smtp_loses_no_notification(
        pg_url: str, smtp: smtp_servers.Servers, tmp_path: Path) -> None:
    cases, token_of = prepare(pg_url, BEFORE + DURING)
    server = smtp.recording()
    service = Service(pg_url, tmp_path, dispatcher="true", smtp_url=server.url,
                      smtp_timeout="5", outbox_backoff_base="2", outbox_backoff_cap="8",
                      outbox_max_attempts="40")
    before = Load(service.base, cases[:BEFORE], token_of, threads=2)
    during = Load(service.base, cases[BEFORE:], token_of, threads=4)
    try:
        service.start()
        before.start()
        assert before.wait_acked(BEFORE, timeout=60), before.statuses
        outbox = _wait_all_sent(pg_url, timeout=60)
        assert outbox and {s for s, _, _ in outbox.values()} == {"sent"}, Counter(outbox.values())

        server.stop()  # the outage
        down_at = time.monotonic()
        during.start()
        assert during.wait_acked(DURING, timeout=OUTAGE_SECONDS - 10), during.statuses
        during.stop()
        time.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))
        in_outage = {mid: row for mid, row in _outbox(pg_url).items() if mid not in outbox}
        back = smtp.recording(port=server.port)  # the same port again
        back_at = time.monotonic()
        final = _wait_all_sent(pg_url, timeout=90)
        recovered_in = time.monotonic() - back_at
    finally:
        before.stop()
        during.stop()
        service.stop()
    new = set(final) - set(outbox)
    attempts_in_outage = Counter(a for _, a, _ in in_outage.values())
    print(f"\nSMTP down {OUTAGE_SECONDS:.0f} s: {len(outbox)} sent before, {len(new)} enqueued "
          f"during the outage, attempts per row when it ended {dict(attempts_in_outage)}, "
          f"all delivered {recovered_in:.1f} s after the server came back; "
          f"statuses {dict(Counter(s for s, _, _ in final.values()))}")
    assert len(new) >= DURING, f"expected an email per approval: {len(new)}"
    # Given up would be "dead" or "dropped"; a row is "sending" while a pass holds it (the
    # snapshot can fall in the middle of one), "pending" between passes.
    outage_statuses = Counter(s for s, _, _ in in_outage.values())
    assert set(outage_statuses) <= {"pending", "sending"}, \
        f"a notification was given up during the outage: {dict(outage_statuses)}"
    assert all(a >= 1 for a in attempts_in_outage), "the outage went unnoticed"
    lost = {mid: row for mid, row in final.items() if row[0] != "sent"}
    assert not lost, f"{len(lost)} notifications not delivered: {list(lost.items())[:5]}"

    received = server.messages + back.messages
    seen = Counter(m.message_id for m in received)
    assert set(seen) == set(final), (
        f"missing {sorted(set(final) - set(seen))[:5]}, "
        f"unknown {sorted(set(seen) - set(final))[:5]}")
    assert {m.message_id for m in back.messages} >= new, "an outage email arrived before the end"
    resent: dict[str, list[str]] = defaultdict(list)
    for message in received:
        if seen[message.message_id] > 1:
            resent[message.message_id].append(str(message.message["X-Pledgeflow-Attempt"]))
    for message_id, attempts in resent.items():
        assert len(set(attempts)) == len(attempts), \
            f"{message_id} arrived twice from one attempt {attempts}"
    print(f"received {len(received)} messages, {len(seen)} distinct, {len(resent)} re-sent")
