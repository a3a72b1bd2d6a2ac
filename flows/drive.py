"""Driving the campaign: ``drive_period`` (the scheduled one) and ``drive_case`` (ad hoc).

Both read the state from the service, ask ``flows.steps`` what is due, and act through the
API, so they are safe to run again at any time: whatever was done is read back as done.

``drive_period`` is one flow run per period and job, never one per case (a served run is a
~90 MB process, and thousands of task runs a minute overflow Prefect's event broker):

1. read every case of the period in pages of 1000 (one task);
2. group the due steps by action and send each action's cases in chunks of ``chunk_size`` —
   one bulk request and one task per chunk, each case in its own savepoint on the service;
   cases the bulk answer moved are judged again (a closed round is announced in the same
   run), up to three passes;
3. the period-wide steps, one at a time: select → post each shortlist → hand the decision to
   the campaign office (the rollover is ``roll_over_period``'s job).

A run that dies half-way leaves each chunk either applied or not (one transaction per
request); the next run reads what happened and does the rest — no duplicate, no gap.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.client import FlowClient, ServiceError, parse_instant
from flows.runtime import call, logger
from flows.steps import (
    CASE_ACTIONS,
    AwardSnapshot,
    Calendar,
    CaseSnapshot,
    RoundSnapshot,
    Step,
    due_step,
    period_step,
)

__all__ = ["drive_period", "drive_case", "calendar_of", "snapshot_of", "award_of",
           "due_by_action", "MAX_CHUNK"]

MAX_CHUNK = 1000  # the bulk endpoint's limit
PASSES = 3
PERIOD_STEPS = 8


# --- from the API's JSON to the snapshots the steps judge ----------------------------------------

def calendar_of(period: dict[str, Any]) -> Calendar:
    """A period as ``GET /periods/{code}`` returns it."""
    cal = period["calendar"]
    return Calendar(code=period["code"], status=period["status"],
                    starts_on=date.fromisoformat(cal["starts_on"]),
                    ends_on=date.fromisoformat(cal["ends_on"]),
                    review_opens_on=date.fromisoformat(cal["review_opens_on"]),
                    evaluation_opens_on=date.fromisoformat(cal["evaluation_opens_on"]),
                    commendation_on=date.fromisoformat(cal["commendation_on"]),
                    notice_days=int(period.get("rules", {}).get("notice_days", 7)))


def snapshot_of(item: dict[str, Any]) -> CaseSnapshot:
    """A case as ``GET /periods/{code}/case-states`` returns it."""
    r = item.get("round")
    round_ = None if r is None else RoundSnapshot(
        closes_at=parse_instant(r["closes_at"]), extended=r["extended"],  # type: ignore[arg-type]
        assigned=r["assigned"], voted=r["voted"], quorum=r["quorum"])
    return CaseSnapshot(case_id=item["id"], stage=item["stage"], status=item["status"],
                        version=item["version"], due_at=parse_instant(item.get("due_at")),
                        round=round_, subject_kind=item["subject_kind"],
                        open_objection=item.get("open_objection", False))


def award_of(item: dict[str, Any]) -> AwardSnapshot:
    """An award as ``GET /periods/{code}/awards`` returns it."""
    return AwardSnapshot(commendation_id=item["commendation_id"], award=item["award"],
                         status=item["status"], handed_off=item["handed_off"],
                         notice_ends_at=parse_instant(item.get("notice_ends_at")))


def due_by_action(cases: Iterable[CaseSnapshot], calendar: Calendar,
                  now: datetime) -> dict[str, list[int]]:
    """Case ids grouped by the step due on them, actions in the sequence's order."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for case in cases:
        step = due_step(case, calendar, now)
        if step is not None:
            grouped[step.action].append(case.case_id)
    return {a: sorted(grouped[a]) for a in CASE_ACTIONS if grouped.get(a)}


# --- tasks: one per read, per chunk, per period-wide step -----------------------------------------

@dataclass
class PeriodView:
    """What one read of a period gives: calendar, the service's now, cases and awards."""

    calendar: Calendar
    now: datetime
    cases: dict[int, CaseSnapshot]
    awards: list[AwardSnapshot]


@task(name="read-period", cache_policy=NO_CACHE)
def read_period(api: FlowClient, code: str) -> PeriodView:
    """The period's calendar, every case (paged) and its awards."""
    calendar = calendar_of(api.period(code))
    now, items = api.case_states(code)
    awards = [award_of(a) for a in api.awards(code)["awards"]]
    return PeriodView(calendar, now, {c.case_id: c for c in map(snapshot_of, items)}, awards)


@task(name="apply-chunk", task_run_name="{action}", cache_policy=NO_CACHE)
def apply_chunk(api: FlowClient, action: str, case_ids: list[int]) -> dict[str, Any]:
    """One bulk request: ``action`` on these cases, each in its own savepoint."""
    return api.bulk(action, case_ids)


@task(name="period-step", task_run_name="{action}", cache_policy=NO_CACHE)
def apply_period_step(api: FlowClient, code: str, action: str,
                      target: int | None) -> dict[str, Any]:
    """select / post_shortlist / hand_off; what is already done is reported, not raised."""
    try:
        if action == "select":
            return {"action": action, "awards": api.select(code)}
        if action == "post_shortlist":
            assert target is not None
            return {"action": action, "notice": api.post_notice(target)}
        if action == "hand_off":
            return {"action": action, "results": api.hand_off(code)}
    except ServiceError as exc:
        if exc.status == 409:  # done by someone else meanwhile (e.g. the office, by hand)
            return {"action": action, "refused": str(exc)}
        raise
    raise ValueError(f"unknown period step {action!r}")


# --- the flows ----------------------------------------------------------------------------------

@dataclass
class _Summary:
    period: str
    now: str = ""
    cases: int = 0
    chunks: int = 0
    done: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    period_steps: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"period": self.period, "now": self.now, "cases": self.cases,
                "chunks": self.chunks, "done": dict(self.done), "refused": dict(self.refused),
                "refusal_reasons": dict(self.reasons), "period_steps": self.period_steps,
                **({"note": self.note} if self.note else {})}


def _apply_case_steps(api: FlowClient, view: PeriodView, chunk_size: int,
                      summary: _Summary) -> None:
    """Step 2: due steps by action, one bulk request per chunk; re-judge what moved."""
    candidates = list(view.cases.values())
    for _ in range(PASSES):
        moved: list[CaseSnapshot] = []
        for action, ids in due_by_action(candidates, view.calendar, view.now).items():
            for start in range(0, len(ids), chunk_size):
                result = call(apply_chunk, api, action, ids[start:start + chunk_size])
                summary.chunks += 1
                for r in result["results"]:
                    if not r["ok"]:
                        summary.refused[action] += 1
                        summary.reasons.update(x["code"] for x in r.get("reasons") or [])
                        continue
                    summary.done[action] += 1
                    # What the case is now; its deadline and round are unknown until re-read.
                    case = replace(view.cases[r["case_id"]], stage=r["to"]["stage"],
                                   status=r["to"]["status"], version=r["version"],
                                   due_at=None, round=None)
                    view.cases[case.case_id] = case
                    moved.append(case)
        if not moved:
            return
        candidates = moved


def _apply_period_steps(api: FlowClient, view: PeriodView, summary: _Summary) -> None:
    """Step 3: one period-wide step at a time until none is due (or the period has ended)."""
    code = view.calendar.code
    seen: set[tuple[str, int | None]] = set()
    for _ in range(PERIOD_STEPS):
        step: Step | None = period_step(view.cases.values(), view.calendar, view.now,
                                        view.awards)
        if step is None:
            return
        if step.action == "roll_over" or (step.action, step.target) in seen:
            summary.period_steps.append({"action": step.action, "why": step.why,
                                         "result": "left to roll_over_period"
                                         if step.action == "roll_over" else "not taken again"})
            return
        seen.add((step.action, step.target))
        outcome = call(apply_period_step, api, code, step.action, step.target)
        summary.period_steps.append({"action": step.action, "why": step.why,
                                     "target": step.target,
                                     "result": "refused" if "refused" in outcome else "done"})
        for award in outcome.get("awards") or []:  # select moved the nominated cases
            for n in award.get("nominations", []):
                if n["case_id"] in view.cases:
                    view.cases[n["case_id"]] = replace(view.cases[n["case_id"]],
                                                       stage=n["stage"], status=n["status"])
        view.awards = [award_of(a) for a in api.awards(code)["awards"]]


def _drive(api: FlowClient, code: str, chunk_size: int) -> dict[str, Any]:
    view = call(read_period, api, code)
    summary = _Summary(period=code, now=view.now.isoformat(), cases=len(view.cases))
    if view.calendar.status != "open":
        summary.note = f"period {code} is {view.calendar.status}: nothing to drive"
        return summary.as_dict()
    _apply_case_steps(api, view, chunk_size, summary)
    _apply_period_steps(api, view, summary)
    return summary.as_dict()


@flow(name="drive-period", log_prints=False)
def drive_period(period_code: str | None = None, chunk_size: int = 300) -> dict[str, Any]:
    """Take every step due in a period (default: every open period) — case steps in chunks of
    ``chunk_size`` (one bulk request each), then selection, shortlist notice and hand-off."""
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk_size must be 1..{MAX_CHUNK}, not {chunk_size}")
    log = logger()
    with FlowClient.from_settings() as api:
        codes = [period_code] if period_code else [
            p["code"] for p in api.periods() if p["status"] == "open"]
        summaries = [_drive(api, code, chunk_size) for code in codes]
    for s in summaries:
        log.info("period %s: %d cases, done %s, refused %s, period steps %s", s["period"],
                 s["cases"], s["done"] or "-", s["refused"] or "-",
                 [p["action"] for p in s["period_steps"]] or "-")
    return summaries[0] if period_code else {"periods": summaries}


@flow(name="drive-case", log_prints=False)
def drive_case(case_id: int) -> dict[str, Any]:
    """Take the steps due on one case (one unit or member in one period), one after another,
    until it waits on people or on the calendar. For the office and for tests: the schedule
    drives whole periods."""
    steps: list[dict[str, Any]] = []
    with FlowClient.from_settings() as api:
        state = api.case_state(case_id)
        calendar = calendar_of(api.period(state["period"]))
        for _ in range(PASSES + 1):
            step = due_step(snapshot_of(state), calendar, parse_instant(state["now"]))  # type: ignore[arg-type]
            if step is None:
                break
            result = call(apply_chunk, api, step.action, [case_id])["results"][0]
            steps.append({"action": step.action, "why": step.why, "ok": result["ok"],
                          **({"reasons": result.get("reasons")} if not result["ok"] else {})})
            if not result["ok"]:
                break
            state = api.case_state(case_id)
    logger().info("case %s: %s", case_id, [s["action"] for s in steps] or "nothing due")
    return {"case_id": case_id, "period": state["period"], "steps": steps,
            "stage": state["stage"], "status": state["status"]}
