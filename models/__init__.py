"""SQLAlchemy models: one module per domain noun. Importing this package registers them all."""

from models.auth import ApiToken, LoginFailure, WebSession
from models.base import Base
from models.case import Case
from models.commendation import Commendation, Nomination
from models.evaluation import BallotCount, BallotReceipt, EvaluationRound, EvaluatorAssignment
from models.event import ChainHead, Event
from models.idempotency import IdempotencyRecord
from models.notice import Objection, PublicNotice
from models.notification import ActionLink, Notification
from models.organization import Account, Organization, Person, Position
from models.period import CriteriaSet, Criterion, Period
from models.pledge import FulfilmentEntry, Pledge, PledgeItem
from models.review import Review
from models.spot_check import SpotCheck

__all__ = [
    "Base", "Case", "Commendation", "Nomination", "BallotCount", "BallotReceipt", "EvaluationRound",
    "EvaluatorAssignment", "ChainHead", "Event", "Objection", "PublicNotice", "ActionLink",
    "Notification", "Account", "Organization", "Person", "Position", "CriteriaSet", "Criterion",
    "Period", "FulfilmentEntry", "Pledge", "PledgeItem", "Review", "ApiToken", "WebSession",
    "LoginFailure", "IdempotencyRecord", "SpotCheck",
]
