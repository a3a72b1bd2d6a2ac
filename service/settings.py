"""The one typed settings object, read from ``PLEDGEFLOW_*`` environment variables (and .env)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
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
    service_token: str | None = Field(
        default=None, description="Bearer token the flows use to act (pledgeflow tokens "
        "create --flow NAME).")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own Settings instead)."""
    return Settings()
