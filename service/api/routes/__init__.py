"""The routers, in the order they appear in the OpenAPI document."""

from service.api.routes import (
    auth,
    bulk,
    bulletin,
    cases,
    commendations,
    directory,
    evaluation,
    flowops,
    inbox,
    meta,
    objections,
    reviews,
)

ROUTERS = [meta.router, auth.router, directory.router, cases.router, reviews.router,
           evaluation.router, objections.router, commendations.router, inbox.router,
           bulletin.router, bulk.router, flowops.router]
