"""The demo's service in a process of its own: ``SharedClock`` moved by one process and read by
another, ``serving_process`` starting the real app on it and stopping it, and
``dispatching_process`` delivering the outbox on it."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from models import Notification
from service import migrate
from service.clock import CAMPAIGN_TZ, SharedClock
from service.db import make_engine, make_session_factory
from service.demo.service_process import dispatching_process, serving_process
from service.seed import seed
from service.settings import Settings
from tests import builders as b
from tests import smtp_servers
from tests.smtp_servers import Servers

smtp = smtp_servers.smtp  # the fixture: loopback SMTP servers, always stopped


def test_a_shared_clock_is_seen_by_every_holder_of_its_file(tmp_path: Path) -> None:
    start = datetime(2010, 6, 1, 9, tzinfo=CAMPAIGN_TZ)
    mover, reader = SharedClock(tmp_path / "clock", start), SharedClock(tmp_path / "clock")
    assert reader.now() == start
    mover.advance(days=3)
    assert reader.now() == start + timedelta(days=3)
    mover.set(date(2010, 9, 20))  # a calendar day: its start, in the campaign's zone
    assert reader.now() == datetime(2010, 9, 20, tzinfo=CAMPAIGN_TZ)
    assert reader.now().astimezone(UTC) == datetime(2010, 9, 19, 16, tzinfo=UTC)
    with pytest.raises(ValueError, match="aware"):
        mover.set(datetime(2010, 9, 21, 8))
    assert reader.now() == datetime(2010, 9, 20, tzinfo=CAMPAIGN_TZ)  # unchanged
    assert [p.name for p in tmp_path.iterdir()] == ["clock"]  # no scratch file left


def test_the_service_process_answers_on_the_demo_clock_and_stops(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    migrate.upgrade(url)
    clock = SharedClock(tmp_path / "clock", datetime(2010, 5, 31, 9, tzinfo=CAMPAIGN_TZ))
    ran: list[str] = []
    settings = Settings(database_url=url, dispatcher=False)
    with serving_process(settings, clock, meanwhile=lambda: ran.append("seeded")) as base_url:
        assert ran == ["seeded"]
        assert httpx.get(f"{base_url}/healthz", timeout=10).status_code == 200
        periods = httpx.get(f"{base_url}/api/v1/periods", timeout=10)
        assert periods.status_code == 200, periods.text
    with pytest.raises(httpx.TransportError):  # stopped with the block
        httpx.get(f"{base_url}/healthz", timeout=2)


def test_the_dispatcher_process_delivers_on_the_demo_clock_and_stops(
        tmp_path: Path, smtp: Servers) -> None:
    """Notifications are sent when the demo's clock says they are due, not before."""
    server = smtp.recording()
    url = f"sqlite:///{tmp_path}/demo.db"
    migrate.upgrade(url)
    clock = SharedClock(tmp_path / "clock", datetime(2010, 5, 31, 9, tzinfo=CAMPAIGN_TZ))
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        opened_at = b.clock_at(clock.now())
        with factory() as s, s.begin():
            seed(s, demo=True)
            b.opened_period(s, opened_at)  # the next morning: announcements due then
        with factory() as s:
            due = s.scalar(sa.select(sa.func.count()).select_from(Notification))
        assert due
        settings = Settings(database_url=url, smtp_url=server.url)
        with dispatching_process(settings, clock):
            time.sleep(3)  # started, and a few passes (one a second) on the demo's evening
            assert server.messages == []
            clock.set(opened_at.now())
            deadline = time.monotonic() + 60
            while len(server.messages) < due and time.monotonic() < deadline:
                time.sleep(0.1)
        with factory() as s:
            statuses = set(s.scalars(sa.select(Notification.status)))
    finally:
        engine.dispose()
    assert len(server.messages) == due
    assert statuses == {"sent"}
