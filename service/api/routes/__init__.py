"""The routers, in the order they appear in the OpenAPI document."""

from service.api.routes import auth, cases, meta

ROUTERS = [meta.router, auth.router, cases.router]
