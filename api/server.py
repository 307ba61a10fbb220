"""Wiring: from settings to a database, a migrated schema, an engine and a running HTTP server."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import uvicorn

import migrations
from api.app import create_app
from api.database import start_embedded
from api.settings import Settings
from commands.engine import PricingEngine


def database_url(settings: Settings, log=print) -> str:
    if settings.database_url:
        return settings.database_url
    url = start_embedded(settings.data_dir / "postgres")
    log(f"embedded PostgreSQL running, data in {settings.data_dir / 'postgres'}")
    return url


def build(settings: Settings, log=print):
    """Migrate and return (engine, FastAPI app)."""
    url = database_url(settings, log)
    migrations.apply(url, log=log)
    engine = PricingEngine(url, pool_size=settings.pool_size)
    return engine, create_app(engine, settings.max_body_bytes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, host: str = "127.0.0.1", port: int | None = None):
    """Serve app with uvicorn in a background thread; yields the base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"HTTP server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
