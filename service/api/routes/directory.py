"""Reference data: the organization tree, people, periods with their calendars, criteria sets.

Organizations, periods and criteria are public (the bulletin board shows them). People are
not: a signed-in caller sees the people of their own enterprise (the committee subtree they
belong to); the campaign office, auditors and flows see everyone. E-mail addresses go only to
the campaign office, auditors and the person themself; anything else answers as if the person
did not exist (404), so ids cannot be probed.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from models import CriteriaSet, Criterion, Organization, Period, Person, Position
from service.accounts import Principal, Unauthenticated
from service.api import problems
from service.api.deps import CurrentPrincipal, UoW
from service.api.schemas import Out, Page, PathId, PeriodCode, QueryId
from service.errors import NotFound
from service.periods import get_period
from service.rules import CampaignRules
from service.visibility import sees_everything
from service.workflow.inputs import MAX_ID

router = APIRouter(prefix="/api/v1", tags=["directory"])


# --- bodies ----------------------------------------------------------------------------------

class OrganizationOut(Out):
    id: int
    code: str
    name_zh: str
    name_en: str
    kind: str
    parent_id: int | None
    depth: int = Field(description="0 for the campaign office at the root, 1 for committees, …")
    active: bool


class OrganizationNode(OrganizationOut):
    children: list[OrganizationNode] = Field(default_factory=list)


class OrganizationDetail(OrganizationOut):
    ancestor_ids: list[int] = Field(description="From the root down to the parent.")
    child_ids: list[int]


class PositionOut(Out):
    organization_id: int
    role: str


class PersonOut(Out):
    id: int
    name: str
    organization_id: int
    is_party_member: bool
    active: bool
    email: str | None = Field(
        default=None, description="Only for the campaign office, auditors and the person.")
    positions: list[PositionOut] = Field(default_factory=list)


class CalendarOut(Out):
    starts_on: date
    ends_on: date
    pledge_due_on: date
    review_opens_on: date
    review_due_on: date
    evaluation_opens_on: date
    evaluation_due_on: date
    commendation_on: date


class ScaleOptionOut(BaseModel):
    code: str
    label_zh: str
    label_en: str
    satisfied: bool


class PeriodOut(BaseModel):
    id: int
    code: str
    sequence: int
    name_zh: str
    name_en: str
    status: str
    calendar: CalendarOut
    rules: dict[str, Any] = Field(description="The period's rules merged with the defaults.")
    scale_options: list[ScaleOptionOut] = Field(description="The ballot scale, best first.")


class CriterionOut(Out):
    id: int
    code: str
    name_zh: str
    name_en: str
    description_zh: str
    position: int


class CriteriaSetOut(Out):
    id: int
    code: str
    name_zh: str
    name_en: str
    applies_to: str
    organization_id: int | None
    refines_id: int | None
    criteria: list[CriterionOut] = Field(default_factory=list)


# --- organizations (public) ------------------------------------------------------------------

def _depth(org: Organization) -> int:
    return max(len([p for p in org.path.strip("/").split("/") if p]) - 1, 0)


def _org_out(org: Organization, cls: type[OrganizationOut] = OrganizationOut,
             **extra: Any) -> Any:
    return cls(id=org.id, code=org.code, name_zh=org.name_zh, name_en=org.name_en,
               kind=org.kind, parent_id=org.parent_id, depth=_depth(org), active=org.active,
               **extra)


@router.get("/organizations", response_model=list[OrganizationNode] | list[OrganizationOut],
            summary="The organization tree (public)")
def list_organizations(
    uow: UoW,
    nested: bool = Query(False, description="Nest children under their parents."),
) -> list[OrganizationNode] | list[OrganizationOut]:
    """Every organization, parents before children; ``nested=true`` returns the roots with
    their ``children`` nested."""
    with uow() as session:
        orgs = list(session.scalars(sa.select(Organization).order_by(Organization.id)))
    orgs.sort(key=lambda o: (_depth(o), o.id))
    if not nested:
        return [_org_out(o) for o in orgs]
    nodes = {o.id: _org_out(o, OrganizationNode) for o in orgs}
    roots: list[OrganizationNode] = []
    for org in orgs:
        parent = nodes.get(org.parent_id) if org.parent_id is not None else None
        (parent.children if parent is not None else roots).append(nodes[org.id])
    return roots


@router.get("/organizations/{organization_id}", response_model=OrganizationDetail,
            summary="One organization (public)", responses=problems.responses(404))
def get_organization(organization_id: PathId, uow: UoW) -> OrganizationDetail:
    """One organization, with the ids of its ancestors and children."""
    with uow() as session:
        org = session.get(Organization, organization_id)
        if org is None:
            raise NotFound(f"organization {organization_id} not found")
        children = session.scalars(sa.select(Organization.id).where(
            Organization.parent_id == org.id).order_by(Organization.id)).all()
        return _org_out(org, OrganizationDetail, ancestor_ids=org.ancestor_ids(),
                        child_ids=list(children))


# --- people (signed in, filtered) ------------------------------------------------------------

def _people_scope(session: Session, principal: Principal) -> tuple[sa.ColumnElement[bool], bool]:
    """(WHERE clause over Person, whether e-mails of others may be shown) for this caller."""
    if principal.person_id is None and not principal.flow:
        raise Unauthenticated("sign in, or send a bearer token")
    if sees_everything(session, principal):
        return sa.true(), not principal.flow
    me = principal.person_id
    assert me is not None
    own_orgs = sa.select(Person.organization_id).where(Person.id == me).union(
        sa.select(Position.organization_id).where(Position.person_id == me))
    paths = session.scalars(sa.select(Organization.path).where(
        Organization.id.in_(own_orgs), Organization.kind != "campaign_office")).all()
    enterprises = sorted({_enterprise_path(p) for p in paths} - {None})  # type: ignore[arg-type]
    if not enterprises:
        return Person.id == me, False
    in_enterprise = sa.select(Organization.id).where(
        sa.or_(*[Organization.path.startswith(p) for p in enterprises]))
    return sa.or_(Person.id == me, Person.organization_id.in_(in_enterprise)), False


def _enterprise_path(path: str) -> str | None:
    """``/1/4/17/`` → ``/1/4/``: the committee subtree an organization belongs to."""
    parts = [p for p in path.strip("/").split("/") if p]
    return "/" + "/".join(parts[:2]) + "/" if len(parts) >= 2 else None


def _people_out(session: Session, people: list[Person], principal: Principal,
                emails: bool) -> list[PersonOut]:
    positions: dict[int, list[PositionOut]] = {}
    if people:
        for pos in session.scalars(sa.select(Position).where(
                Position.person_id.in_([p.id for p in people]))
                .order_by(Position.organization_id, Position.role)):
            positions.setdefault(pos.person_id, []).append(PositionOut.model_validate(pos))
    return [PersonOut(id=p.id, name=p.name, organization_id=p.organization_id,
                      is_party_member=p.is_party_member, active=p.active,
                      email=p.email if emails or p.id == principal.person_id else None,
                      positions=positions.get(p.id, [])) for p in people]


@router.get("/people", response_model=Page[PersonOut], summary="People the caller may see")
def list_people(
    uow: UoW, principal: CurrentPrincipal,
    organization_id: QueryId = None,
    after: int = Query(0, ge=0, le=MAX_ID,
                       description="Return people with id greater than this."),
    limit: int = Query(50, ge=1, le=500),
) -> Page[PersonOut]:
    """People the caller may see, by id; e-mails only where allowed."""
    with uow() as session:
        scope, emails = _people_scope(session, principal)
        query = sa.select(Person).where(scope, Person.id > after)
        if organization_id is not None:
            query = query.where(Person.organization_id == organization_id)
        rows = list(session.scalars(query.order_by(Person.id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(items=_people_out(session, rows, principal, emails),
                    next_after=rows[-1].id if more else None)


@router.get("/people/{person_id}", response_model=PersonOut, summary="One person",
            responses=problems.responses(404))
def get_person(person_id: PathId, uow: UoW, principal: CurrentPrincipal) -> PersonOut:
    """One person, or 404 when the caller may not see them."""
    with uow() as session:
        scope, emails = _people_scope(session, principal)
        person = session.scalars(sa.select(Person).where(Person.id == person_id, scope)).first()
        if person is None:
            raise NotFound(f"person {person_id} not found")
        return _people_out(session, [person], principal, emails)[0]


# --- periods and criteria (public) -----------------------------------------------------------

def period_out(period: Period) -> PeriodOut:
    """A period with its calendar and its effective rules."""
    rules = CampaignRules.model_validate(period.rules or {})
    return PeriodOut(
        id=period.id, code=period.code, sequence=period.sequence, name_zh=period.name_zh,
        name_en=period.name_en, status=period.status,
        calendar=CalendarOut.model_validate(period),
        rules=rules.model_dump(mode="json"),
        scale_options=[ScaleOptionOut(**o.model_dump()) for o in rules.ballot_scale.options])


@router.get("/periods", response_model=list[PeriodOut], summary="Campaign periods (public)")
def list_periods(uow: UoW) -> list[PeriodOut]:
    """Every period in order, with its calendar and effective rules."""
    with uow() as session:
        return [period_out(p) for p in session.scalars(
            sa.select(Period).order_by(Period.sequence))]


@router.get("/periods/{code}", response_model=PeriodOut, summary="One period (public)",
            responses=problems.responses(404))
def get_period_by_code(code: PeriodCode, uow: UoW) -> PeriodOut:
    """One period by code, e.g. ``2010``."""
    with uow() as session:
        return period_out(get_period(session, code))


@router.get("/criteria-sets", response_model=list[CriteriaSetOut],
            summary="Criteria sets with their criteria in order (public)")
def list_criteria_sets(
    uow: UoW,
    applies_to: str | None = Query(None, pattern="^(organization|member|carrier)$"),
) -> list[CriteriaSetOut]:
    """Criteria sets (四强, 四优, 六个一 and refinements), criteria in order."""
    with uow() as session:
        query = sa.select(CriteriaSet).order_by(CriteriaSet.id)
        if applies_to is not None:
            query = query.where(CriteriaSet.applies_to == applies_to)
        sets = list(session.scalars(query))
        criteria: dict[int, list[CriterionOut]] = {}
        if sets:
            for c in session.scalars(sa.select(Criterion).where(
                    Criterion.criteria_set_id.in_([s.id for s in sets]))
                    .order_by(Criterion.criteria_set_id, Criterion.position, Criterion.id)):
                criteria.setdefault(c.criteria_set_id, []).append(CriterionOut.model_validate(c))
        out = []
        for s in sets:
            item = CriteriaSetOut.model_validate(s)
            item.criteria = criteria.get(s.id, [])
            out.append(item)
        return out
