"""``roll_over_period``: close the periods that have ended and open the next ones.

The service decides whether a period has ended (its clock, its calendar): the flow asks it to
roll over every period that is still open — or the one it is given — and takes "not ended yet"
for an answer. The service's rollover lapses what is unfinished (history kept), closes the
period, opens the next with a case for every active unit and member, carries unfinished pledge
items into the new drafts and tells everyone concerned, in one transaction; run twice, or
twice at once, the second run changes nothing.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.client import FlowClient, ServiceError
from flows.runtime import call, logger

__all__ = ["roll_over_period", "roll_over"]


@task(name="roll-over", task_run_name="roll-over-{code}", cache_policy=NO_CACHE)
def roll_over(api: FlowClient, code: str) -> dict[str, Any]:
    """Ask the service to roll one period over; ``not_ended`` when it is still running."""
    try:
        return {"period": code, "result": "rolled_over", **api.roll_over(code)}
    except ServiceError as exc:
        if exc.has_reason("period_not_ended"):
            return {"period": code, "result": "not_ended"}
        raise


@flow(name="roll-over-period", log_prints=False)
def roll_over_period(period_code: str | None = None) -> dict[str, Any]:
    """Roll over ``period_code``, or every open period that has ended (and the one it opens,
    if that has ended too — catching up after downtime). Idempotent."""
    with FlowClient.from_settings() as api:
        periods = api.periods()
        queue = [period_code] if period_code else [
            p["code"] for p in periods if p["status"] == "open"]
        results = []
        while queue and len(results) <= len(periods):
            result = call(roll_over, api, queue.pop(0))
            results.append(result)
            if not period_code and result.get("opened_period"):
                queue.append(result["opened_period"])  # catching up: it may have ended too
    log = logger()
    for r in results:
        if r["result"] == "rolled_over":
            log.info("period %s: closed %s (lapsed %s), opened %s (%s cases)", r["period"],
                     r["closed_period"] or "-", r["lapsed"], r["opened_period"] or "-",
                     r["cases_opened"])
    return {"periods": results,
            "rolled_over": [r["period"] for r in results if r.get("closed_period")]}
