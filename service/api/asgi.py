"""The ASGI entry point for uvicorn workers: ``service.api.asgi:app`` (settings from env)."""

from service.api.app import create_app, freeze_startup_heap

app = create_app()
freeze_startup_heap()
