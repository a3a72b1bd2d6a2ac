"""The ASGI entry point for uvicorn workers: ``service.api.asgi:app`` (settings from env)."""

from service.api.app import create_app

app = create_app()
