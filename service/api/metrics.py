"""Prometheus metrics: requests and latencies per route, transitions per action, outbox depth.

Each app has its own registry (tests create many apps). The request middleware is plain ASGI
and labels by route template (``/api/v1/cases/{case_id}``), never by raw path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from models import Notification

__all__ = ["Metrics", "MetricsMiddleware"]


class _OutboxCollector(Collector):
    """Outbox rows per status, counted at scrape time."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    def collect(self):  # type: ignore[no-untyped-def]
        family = GaugeMetricFamily("pledgeflow_outbox_notifications",
                                   "Notifications in the outbox by status", labels=["status"])
        try:
            with self.factory() as session:
                rows = session.execute(sa.select(Notification.status, sa.func.count())
                                       .group_by(Notification.status)).all()
        except sa.exc.SQLAlchemyError:
            return  # unknown is not zero: leave the gauge out while the database is down
        counts = dict(rows)
        for status in ("pending", "sending", "sent", "dead", "dropped"):
            family.add_metric([status], counts.get(status, 0))
        yield family


class Metrics:
    """The registry and instruments of one app."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pledgeflow_http_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("pledgeflow_http_request_duration_seconds",
                                 "HTTP request latency", ["route"], registry=self.registry,
                                 buckets=(.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.transitions = Counter("pledgeflow_transitions_total",
                                   "Workflow transitions applied over HTTP", ["action"],
                                   registry=self.registry)
        self.registry.register(_OutboxCollector(factory))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request."""

    def __init__(self, app: Callable[..., Any], metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
