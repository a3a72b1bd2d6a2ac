"""What ``pledgeflow demo`` reports: one ``PeriodReport`` per replayed period, one
``DemoReport`` for the whole run, each rendering itself as plain text."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# --- the report -----------------------------------------------------------------------------------

@dataclass
class PeriodReport:
    period: str
    by_state: Counter[str] = field(default_factory=Counter)
    commended: dict[str, list[str]] = field(default_factory=dict)
    emails: Counter[str] = field(default_factory=Counter)
    caught: int = 0
    people_requests: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    flow_runs: Counter[str] = field(default_factory=Counter)
    flow_done: Counter[str] = field(default_factory=Counter)
    returned: int = 0
    late: int = 0
    below_quorum: int = 0
    objection_upheld: int | None = None
    rollover: str = ""
    audit: str = ""
    seconds: float = 0.0

    def render(self) -> str:
        lines = [f"period {self.period}  ({self.seconds:.1f} s)"]
        lines.append("  cases by stage/status:")
        lines += [f"    {state:<28} {n:>5}" for state, n in sorted(self.by_state.items())]
        lines.append(f"  people: {self.people_requests} API requests; {self.late} pledged late, "
                     f"{self.returned} returned once, objection upheld on case "
                     f"{self.objection_upheld}, {self.below_quorum} rounds left below quorum"
                     + (f"; refused {dict(self.refused)}" if self.refused else ""))
        lines.append("  flows: " + ", ".join(f"{k}×{v}" for k, v in sorted(self.flow_runs.items()))
                     + "; steps done " + ", ".join(f"{k} {v}" for k, v in
                                                  sorted(self.flow_done.items())))
        lines.append("  commendations:")
        for award, names in self.commended.items():
            lines.append(f"    {award} ({len(names)}): {', '.join(names) or '-'}")
        if not self.commended:
            lines.append("    (none)")
        lines.append(f"  emails caught: {self.caught}  (" + ", ".join(
            f"{t} {n}" for t, n in sorted(self.emails.items())) + ")")
        if self.rollover:
            lines.append(f"  rollover: {self.rollover}")
        lines.append(f"  audit verify: {self.audit}")
        return "\n".join(lines)


@dataclass
class DemoReport:
    periods: list[PeriodReport]
    flow_mode: str
    database: str
    mail_dir: Path
    total_caught: int = 0
    audit: str = ""
    setup_seconds: float = 0.0
    seconds: float = 0.0

    def render(self) -> str:
        out = [f"pledgeflow demo — flows called {self.flow_mode}; database {self.database}",
               f"setup (migrate, seed, tokens, service, mail catcher): {self.setup_seconds:.1f} s"]
        out += [p.render() for p in self.periods]
        out.append(f"emails caught in {self.mail_dir}: {self.total_caught}")
        out.append(f"audit verify: {self.audit}")
        out.append(f"total wall time: {self.seconds:.1f} s")
        return "\n".join(out)
