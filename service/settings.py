"""The one typed settings object, read from ``PLEDGEFLOW_*`` environment variables (and .env)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Configuration of every pledgeflow process; see .env.example for each variable."""

    model_config = SettingsConfigDict(env_prefix="PLEDGEFLOW_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///var/pledgeflow.db",
        description="SQLAlchemy URL; SQLite (embedded default) or postgresql+psycopg://…",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8000", description="Public base URL for links in emails."
    )
    timezone: str = Field(default="Asia/Shanghai", description="Campaign calendar time zone.")
    smtp_url: str = Field(default="smtp://127.0.0.1:8025", description="Outgoing mail server.")
    mail_from: str = Field(default="pledgeflow <noreply@example.org>")
    sql_echo: bool = False
    db_pool_size: int = Field(default=10, ge=1, le=100)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="Request size cap.")
    cookie_secure: bool = Field(default=False, description="Send cookies over HTTPS only.")
    mail_catcher_dir: str | None = Field(
        default=None, description="Where the local mail catcher keeps mail; enables /dev/mail.")
    dispatcher: bool = Field(default=True, description="Deliver the outbox from the service.")
    smtp_timeout: float = Field(default=10.0, gt=0)
    smtp_connections: int = Field(default=4, ge=1, le=32)
    smtp_verify_tls: bool = True
    outbox_max_attempts: int = Field(default=8, ge=1)
    outbox_backoff_base: float = Field(
        default=30.0, gt=0, description="Seconds before the first retry of a failed send; "
        "doubled on each further attempt (with jitter).")
    outbox_backoff_cap: float = Field(default=7200.0, gt=0, description="Longest wait, in "
                                      "seconds, between two attempts of one notification.")
    link_expiry_days: dict[str, float] = Field(
        default_factory=dict, description="Days an action link works, per action, over the "
        'defaults in notifications/links.py (JSON, e.g. {"approve": 7, "cast_ballot": 21}).')
    service_token: str | None = Field(
        default=None, description="Bearer token the flows use to act (pledgeflow tokens "
        "create --flow NAME).")
    # Flow schedules: cron in the campaign time zone (``timezone``); see docs/flows.md.
    flows_drive_cron: str = Field(default="0 * * * *", description="drive_period (hourly).")
    flows_reminders_cron: str = Field(default="30 8 * * *", description="send_reminders.")
    flows_sweep_cron: str = Field(default="*/10 * * * *", description="sweep_notifications.")
    flows_rollover_cron: str = Field(default="10 0 * * *", description="roll_over_period.")
    flows_chunk_size: int = Field(default=300, ge=1, le=1000,
                                  description="Cases per bulk request in drive_period.")
    flows_serve_limit: int = Field(default=4, ge=1, le=32, description="Flow runs at once "
                                   "under `pledgeflow flows serve` (each is a ~90 MB process).")

    @field_validator("link_expiry_days")
    @classmethod
    def _known_link_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        from notifications.links import EXPIRY

        unknown = sorted(set(value) - set(EXPIRY))
        if unknown:
            raise ValueError(f"no action link of kind {', '.join(unknown)}; "
                             f"the kinds are {', '.join(sorted(EXPIRY))}")
        if any(days <= 0 for days in value.values()):
            raise ValueError("a link's expiry must be more than 0 days")
        return value


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own Settings instead)."""
    return Settings()
