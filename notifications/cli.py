"""``pledgeflow mail …``: look at the notification emails without sending any.

``mail_app`` is a Typer sub-app; the main CLI (``service/cli.py``) mounts it as ``mail``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from notifications.render import LANGS, TEMPLATES, render, sample_context

__all__ = ["mail_app"]

PARTS = ("text", "html", "both")

mail_app = typer.Typer(help="Notification emails (templates in zh-CN and English).",
                       no_args_is_help=True, add_completion=False)


@mail_app.callback()
def _mail() -> None:
    """Notification emails (templates in zh-CN and English)."""


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@mail_app.command()
def preview(
    template: Annotated[str, typer.Argument(
        help=f"Template name: {', '.join(TEMPLATES)}.", show_default=False)],
    lang: Annotated[str, typer.Option("--lang", help="zh (zh-CN) or en.")] = "zh",
    part: Annotated[str, typer.Option("--part", help="text, html or both.")] = "both",
) -> None:
    """Render TEMPLATE with sample data and print its subject and body part(s)."""
    if template not in TEMPLATES:
        _fail(f"unknown template {template!r}; known templates: {', '.join(TEMPLATES)}")
    if lang not in LANGS:
        _fail(f"unknown language {lang!r}; use one of: {', '.join(LANGS)}")
    if part not in PARTS:
        _fail(f"unknown part {part!r}; use one of: {', '.join(PARTS)}")
    email = render(template, lang, sample_context(template))
    typer.echo(f"Subject: {email.subject}\n")
    if part in ("text", "both"):
        typer.echo("----- text/plain -----\n" if part == "both" else "", nl=False)
        typer.echo(email.text)
    if part in ("html", "both"):
        typer.echo("----- text/html -----\n" if part == "both" else "", nl=False)
        typer.echo(email.html)
