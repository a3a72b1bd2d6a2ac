"""Load the notice's data (and, on request, the invented demo data) into the database.

Idempotent: every row is found by its natural key (organization and criteria-set codes,
period codes, usernames, e-mail addresses) and created only when missing, so running the seed
twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Account, CriteriaSet, Criterion, Organization, Period, Person, Position
from service import seed_data
from service.passwords import hash_password

__all__ = ["seed", "SeedReport"]


@dataclass
class SeedReport:
    """How many rows of each kind the run created (zeros on a second run)."""

    created: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, n: int = 1) -> None:
        self.created[kind] = self.created.get(kind, 0) + n

    def summary(self) -> str:
        parts = [f"{k}: {v}" for k, v in sorted(self.created.items()) if v]
        return ", ".join(parts) or "nothing new (already seeded)"


def seed(session: Session, *, demo: bool = False) -> SeedReport:
    """Load the notice's organizations, periods and criteria; with ``demo``, people too."""
    problems = seed_data.validate()
    if problems:
        raise ValueError("seed data is inconsistent: " + "; ".join(problems))
    report = SeedReport()
    orgs = [seed_data.CAMPAIGN_OFFICE, *seed_data.UNITS]
    if demo:
        orgs += list(seed_data.demo_orgs())
    _organizations(session, orgs, report)
    _periods(session, report)
    _criteria(session, report)
    if demo:
        _people(session, seed_data.demo_people(), report)
    session.flush()
    return report


def _organizations(session: Session, orgs: list[seed_data.OrgSeed], report: SeedReport) -> None:
    by_code = {o.code: o for o in session.scalars(sa.select(Organization))}
    for spec in orgs:  # parents come before children in the seed's order
        if spec.code in by_code:
            continue
        parent = by_code[spec.parent_code] if spec.parent_code else None
        org = Organization(code=spec.code, name_zh=spec.name_zh, name_en=spec.name_en,
                           kind=spec.kind, parent_id=parent.id if parent else None)
        session.add(org)
        session.flush()
        org.path = f"{parent.path if parent else '/'}{org.id}/"
        by_code[spec.code] = org
        report.add("organizations")


def _periods(session: Session, report: SeedReport) -> None:
    existing = set(session.scalars(sa.select(Period.code)))
    for spec in seed_data.PERIODS:
        if spec.code in existing:
            continue
        session.add(Period(
            code=spec.code, sequence=spec.sequence, name_zh=spec.name_zh, name_en=spec.name_en,
            starts_on=spec.starts_on, ends_on=spec.ends_on, pledge_due_on=spec.pledge_due_on,
            review_opens_on=spec.review_opens_on, review_due_on=spec.review_due_on,
            evaluation_opens_on=spec.evaluation_opens_on,
            evaluation_due_on=spec.evaluation_due_on, commendation_on=spec.commendation_on,
            rules={}, status="planned"))
        report.add("periods")


def _criteria(session: Session, report: SeedReport) -> None:
    existing = set(session.scalars(sa.select(CriteriaSet.code)))
    for spec in seed_data.CRITERIA_SETS:
        if spec.code in existing:
            continue
        criteria_set = CriteriaSet(code=spec.code, name_zh=spec.name_zh, name_en=spec.name_en,
                                   applies_to=spec.applies_to)
        session.add(criteria_set)
        session.flush()
        session.add_all([
            Criterion(criteria_set_id=criteria_set.id, code=c.code, name_zh=c.name_zh,
                      name_en=c.name_en, description_zh=c.description_zh, position=n)
            for n, c in enumerate(spec.criteria)])
        report.add("criteria_sets")
        report.add("criteria", len(spec.criteria))


def _people(session: Session, people: tuple[seed_data.PersonSeed, ...],
            report: SeedReport) -> None:
    org_ids = dict(session.execute(sa.select(Organization.code, Organization.id)).all())
    by_email = {p.email: p for p in session.scalars(sa.select(Person))}
    usernames = set(session.scalars(sa.select(Account.username)))
    held = set(session.execute(
        sa.select(Position.person_id, Position.organization_id, Position.role)).all())
    # One hash for the shared demo password: Argon2 is deliberately slow, and these accounts
    # are for trying the roles out, never for a real deployment.
    demo_hash = hash_password(seed_data.DEMO_PASSWORD)
    for spec in people:
        person = by_email.get(spec.email)
        if person is None:
            person = Person(name=spec.name, email=spec.email, lang=spec.lang,
                            organization_id=org_ids[spec.org_code],
                            is_party_member=spec.is_party_member)
            session.add(person)
            session.flush()
            by_email[spec.email] = person
            report.add("people")
        if spec.has_account and spec.username not in usernames:
            session.add(Account(person_id=person.id, username=spec.username,
                                password_hash=demo_hash))
            usernames.add(spec.username)
            report.add("accounts")
        for org_code, role in spec.positions:
            key = (person.id, org_ids[org_code], role)
            if key not in held:
                session.add(Position(person_id=person.id, organization_id=key[1], role=role))
                held.add(key)
                report.add("positions")
