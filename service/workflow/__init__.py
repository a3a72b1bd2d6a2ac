"""The workflow engine: one transition table, one ``apply`` (the choke point).

    from service.workflow import apply, Actor
    apply(session, case_id=…, action="approve", actor=Actor(person_id=…), clock=…)

See ``table.py`` for every legal move and ``engine.py`` for how one is applied.
"""

from service.workflow.engine import Outcome, Subject, apply, open_cases
from service.workflow.roles import Actor
from service.workflow.table import STATUSES, TRANSITIONS

__all__ = ["apply", "open_cases", "Outcome", "Subject", "Actor", "STATUSES", "TRANSITIONS"]
