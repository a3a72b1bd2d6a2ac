"""Chasing what is late, and keeping the outbox moving.

``send_reminders`` asks the service for the day's reminders and escalations in one request
(set-based over every open period; one email per recipient per day, listing every case).
``sweep_notifications`` re-drives outbox rows stuck in ``sending`` past their lease — and dead
ones when asked. Both are safe to run again at any time: a second run the same day adds
nothing.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow

from flows.client import FlowClient
from flows.runtime import logger

__all__ = ["send_reminders", "sweep_notifications"]


@flow(name="send-reminders", log_prints=False)
def send_reminders(period_code: str | None = None, as_of: date | None = None) -> dict[str, Any]:
    """Reminders before deadlines to whoever must act, escalations after them to their
    superior — batched per recipient per day. ``as_of`` defaults to the service's today."""
    with FlowClient.from_settings() as api:
        report = api.run_reminders(as_of=as_of, period=period_code)
    logger().info(
        "reminders %s: %s cases reminded, %s escalated, %s items added", report["as_of"],
        report["reminded_cases"], report["escalated_cases"], report["items_added"])
    return report


@flow(name="sweep-notifications", log_prints=False)
def sweep_notifications(dead: bool = False) -> dict[str, Any]:
    """Put stuck outbox rows (and with ``dead``, dead ones) back in the queue."""
    with FlowClient.from_settings() as api:
        report = api.sweep(dead=dead)
    logger().info("outbox sweep: %s", report)
    return report
