"""Campaign rules: rating scales, quorum, thresholds, quotas and windows.

Everything here is configuration with the defaults documented in ``docs/domain.md`` (taken
from the notes on how the 2010-2012 campaign was run). A period stores its own ``rules`` as
JSON; ``CampaignRules.model_validate(period.rules)`` fills in whatever it leaves out.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CampaignRules", "ScaleOption", "Scale", "SCALES", "DEFAULT_RULES"]


class ScaleOption(BaseModel):
    """One answer on a ballot scale, e.g. 满意; ``satisfied``: does it count as satisfied."""

    model_config = ConfigDict(frozen=True)

    code: str
    label_zh: str
    label_en: str
    satisfied: bool


class Scale(BaseModel):
    """An ordered rating scale, best option first."""

    model_config = ConfigDict(frozen=True)

    code: str
    options: tuple[ScaleOption, ...]

    def option(self, code: str) -> ScaleOption | None:
        """The option with this code, or None."""
        return next((o for o in self.options if o.code == code), None)


SCALES: dict[str, Scale] = {
    # 满意/比较满意/基本满意/不满意 — the four-level scale in most notices of the time.
    "four_level": Scale(
        code="four_level",
        options=(
            ScaleOption(code="satisfied", label_zh="满意", label_en="Satisfied", satisfied=True),
            ScaleOption(
                code="fairly_satisfied", label_zh="比较满意", label_en="Fairly satisfied",
                satisfied=True,
            ),
            ScaleOption(
                code="basically_satisfied", label_zh="基本满意", label_en="Basically satisfied",
                satisfied=True,
            ),
            ScaleOption(
                code="dissatisfied", label_zh="不满意", label_en="Dissatisfied", satisfied=False
            ),
        ),
    ),
    # 满意/一般/不满意 — the three-level variant.
    "three_level": Scale(
        code="three_level",
        options=(
            ScaleOption(code="satisfied", label_zh="满意", label_en="Satisfied", satisfied=True),
            ScaleOption(code="average", label_zh="一般", label_en="Average", satisfied=False),
            ScaleOption(
                code="dissatisfied", label_zh="不满意", label_en="Dissatisfied", satisfied=False
            ),
        ),
    ),
}


class CampaignRules(BaseModel):
    """Per-period configuration of the evaluation and commendation steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: str = Field(default="four_level", description="Code of the ballot scale (SCALES).")
    quorum: float = Field(
        default=2 / 3, gt=0, le=1,
        description="Share of assigned evaluators who must vote for a round to count.",
    )
    satisfaction_threshold: float = Field(
        default=0.60, ge=0, le=1,
        description="Overall satisfaction rate below which a case is not eligible "
        "(a unit under 60% had to redo the work).",
    )
    require_pledge_kept: bool = Field(
        default=True, description="Only cases whose pledge items were all kept are eligible."
    )
    quota_ratio: float = Field(
        default=0.20, gt=0, le=1,
        description="Awards per eligible pool: share of the period's cases of that kind.",
    )
    candidate_ratio: float = Field(
        default=1.2, ge=1,
        description="Shortlist size relative to the quota (about 1:1.2 in practice).",
    )
    notice_days: int = Field(default=7, ge=1, le=60, description="Length of a public notice.")
    round_extension_days: int = Field(
        default=7, ge=1, le=60, description="How long a round below quorum is extended, once."
    )
    disclosure_scope: Literal["unit", "superior", "public"] = Field(
        default="unit", description="Who may see announced evaluation results (通报范围): the "
        "unit and its superiors, only the superiors, or the public bulletin.")
    min_ballots_to_disclose: int = Field(
        default=3, ge=1, description="Below this many ballots, announced results give only "
        "participation: with one or two voters the rates would reveal how each voted.")
    reminder_days_before: tuple[int, ...] = Field(
        default=(3, 1), description="Reminders this many days before a deadline."
    )
    escalation_days_after: int = Field(
        default=3, ge=0, description="Escalate to the superior this many days after a deadline."
    )

    @model_validator(mode="after")
    def _scale_known(self) -> CampaignRules:
        if self.scale not in SCALES:
            raise ValueError(f"unknown scale {self.scale!r}; known: {sorted(SCALES)}")
        return self

    @property
    def ballot_scale(self) -> Scale:
        """The Scale object named by ``scale``."""
        return SCALES[self.scale]


DEFAULT_RULES = CampaignRules()
