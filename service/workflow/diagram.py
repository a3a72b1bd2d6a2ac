"""Draw the transition table (a Mermaid state diagram), so the picture can never drift."""

from __future__ import annotations

from service.workflow.table import INITIAL, TRANSITIONS

__all__ = ["mermaid"]


def _node(state: tuple[str, str]) -> str:
    return f"{state[0]}_{state[1]}"


def mermaid(*, include_self_loops: bool = False, include_lapse: bool = False) -> str:
    """A ``stateDiagram-v2`` of every transition that changes state (by default)."""
    lines = ["stateDiagram-v2", f"    [*] --> {_node(INITIAL)}"]
    seen: set[tuple[str, str, str]] = set()
    for t in TRANSITIONS:
        if t.action == "lapse" and not include_lapse:
            continue
        for source in t.sources:
            for target in t.possible_targets():
                src = _node((t.stage, source))
                dst = _node(target) if t.target or t.targets else src
                if (src == dst and not include_self_loops) or (src, dst, t.action) in seen:
                    continue
                seen.add((src, dst, t.action))
                roles = "/".join(sorted(t.roles - {"public"}) or ["public"])
                lines.append(f"    {src} --> {dst}: {t.action} [{roles}]")
    ends = ("commended", "not_commended", "lapsed") if include_lapse else (
        "commended", "not_commended")
    lines.extend(f"    closed_{status} --> [*]" for status in ends)
    return "\n".join(lines)
