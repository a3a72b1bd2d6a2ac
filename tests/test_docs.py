"""The documents that describe the code stay true to it."""

from __future__ import annotations

from pathlib import Path

from service.workflow.diagram import mermaid

ROOT = Path(__file__).resolve().parent.parent


def test_the_workflow_diagram_in_the_docs_is_the_one_the_table_draws():
    text = (ROOT / "docs" / "workflow.md").read_text(encoding="utf-8")
    assert mermaid() in text, "regenerate docs/workflow.md with `pledgeflow workflow diagram`"


def test_every_setting_is_documented_in_env_example():
    from service.settings import Settings

    documented = (ROOT / ".env.example").read_text(encoding="utf-8")
    missing = [f"PLEDGEFLOW_{name.upper()}" for name in Settings.model_fields
               if f"PLEDGEFLOW_{name.upper()}" not in documented]
    assert not missing, f"add to .env.example: {missing}"
