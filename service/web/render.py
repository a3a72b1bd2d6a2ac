"""Jinja2 for pages: autoescaped, strict, with the language helpers as globals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from service.web import i18n

__all__ = ["page"]

_env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True)
_env.globals.update(stage_name=lambda k, lang: i18n.label(i18n.STAGE_NAMES, k, lang),
                    status_name=lambda k, lang: i18n.label(i18n.STATUS_NAMES, k, lang),
                    action_name=lambda k, lang: i18n.label(i18n.ACTION_NAMES, k, lang))

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; form-action 'self'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
}


def page(request: Request, template: str, lang: str, *, status: int = 200,
         headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """Render a page in ``lang`` (zh or en)."""
    html = _env.get_template(template).render(request=request, lang=lang, **context)
    response = HTMLResponse(html, status_code=status,
                            headers={**SECURITY_HEADERS, **(headers or {})})
    if request.query_params.get("lang") in i18n.LANGS:
        response.set_cookie(i18n.LANG_COOKIE, lang, samesite="lax", max_age=365 * 86400)
    return response
