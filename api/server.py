"""Wiring: from settings to a database, a migrated schema, an engine and a running HTTP server."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import uvicorn

import migrations
from api.app import create_app
from api.auth import AuthSettings
from api.database import start_embedded
from api.settings import Settings
from commands.engine import PricingEngine
from projections.projector import InBackground, Projector, tune_gc
from streams.repricing import RepricingPolicy


def database_url(settings: Settings, log=print) -> str:
    if settings.database_url:
        return settings.database_url
    url = start_embedded(settings.data_dir / "postgres")
    log(f"embedded PostgreSQL running, data in {settings.data_dir / 'postgres'}")
    return url


def build(settings: Settings, log=print):
    """Migrate and return (engine, FastAPI app)."""
    tune_gc()  # a 10,000-observation command allocates like a projector's page
    url = database_url(settings, log)
    migrations.apply(url, log=log)
    engine = PricingEngine(url, pool_size=settings.pool_size)
    engine.use_secret_key(secret_key(settings, log))
    auth_settings = AuthSettings(access_token_ttl=timedelta(minutes=settings.access_token_minutes),
                                 login_per_minute=settings.login_per_minute)
    app = create_app(engine, settings.max_body_bytes, auth_settings)
    if settings.projector == "inprocess":  # else run `etsypro project` as its own process
        app.state.projector = InBackground.projector(Projector(url, engine.mapper.to_domain_event))
    if settings.repricing == "inprocess":  # else run `etsypro reprice` as its own process
        app.state.repricing = InBackground(RepricingPolicy(engine, url), "repricing")
    return engine, app


def serve(settings: Settings, host: str, port: int, workers: int = 1, log=print) -> None:
    """Run the HTTP API in the foreground.

    One worker serves the app object built here. Several workers are processes, one GIL each, so
    request handling uses every core; the parent resolves the database (starting the embedded
    one), migrates and fixes the secret key once and hands them to the workers in the
    environment. Projections must have a single writer, so with several workers the in-process
    projector runs once, in the parent (uvicorn's supervisor, otherwise idle), not per worker;
    so does the repricing policy.
    """
    if workers == 1:
        _, app = build(settings, log)
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    url = database_url(settings, log)
    migrations.apply(url, log=log)
    os.environ.update(ETSYPRO_DATABASE_URL=url, ETSYPRO_SECRET_KEY=secret_key(settings, log), ETSYPRO_PROJECTOR="off",
                      ETSYPRO_REPRICING="off")
    projector = repricing = None
    if settings.projector == "inprocess":
        decoder = PricingEngine(url, pool_size=1).mapper.to_domain_event
        projector = InBackground.projector(Projector(url, decoder)).start()
    if settings.repricing == "inprocess":  # one policy, like one projector: in the parent
        repricing = InBackground(RepricingPolicy(PricingEngine(url, pool_size=2), url), "repricing").start()
    try:
        uvicorn.run("api.server:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="info")
    finally:
        for worker in (repricing, projector):
            if worker is not None:
                worker.stop()


def app_from_env():
    """The app of one worker process of `serve --workers N` (a uvicorn factory)."""
    return build(Settings.from_env(), log=lambda *_: None)[1]


def secret_key(settings: Settings, log=print) -> str:
    """ETSYPRO_SECRET_KEY, or else a random key kept in the data directory (readable by its owner
    only) so that tokens and encrypted TOTP secrets survive a restart on a development machine."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / "secret.key"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        log(f"ETSYPRO_SECRET_KEY is not set: created a key in {path}; set the variable in production")
    return path.read_text().strip()


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
