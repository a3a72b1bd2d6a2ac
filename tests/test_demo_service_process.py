"""The demo's service in a process of its own: ``SharedClock`` moved by one process and read by
another, and ``serving_process`` starting the real app on it and stopping it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from service import migrate
from service.clock import CAMPAIGN_TZ, SharedClock
from service.demo.service_process import serving_process
from service.settings import Settings


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
