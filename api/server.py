"""Wiring: from settings to a database, a migrated schema, an engine and a running HTTP server."""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import signal
import socket
import sys
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
                                 login_per_minute=settings.login_per_minute,
                                 principal_cache_s=settings.principal_cache_ms / 1000)
    app = create_app(engine, settings.max_body_bytes, auth_settings)
    projector, repricing = followers(settings, url, engine)
    if projector is not None:
        app.state.projector = InBackground.projector(projector)
    if repricing is not None:
        app.state.repricing = InBackground(repricing, "repricing")
    return engine, app


def followers(settings: Settings, url: str, engine: PricingEngine):
    """(projector, repricing policy) to run in this process, as the settings ask (None: elsewhere)."""
    projector = repricing = None
    pause = settings.follow_pause_s  # see projections.projector.follow_log
    if settings.projector == "inprocess":  # else run `etsypro project` as its own process
        projector = Projector(url, engine.mapper.to_domain_event, pause=pause)
    if settings.repricing == "inprocess":  # else run `etsypro reprice` as its own process
        repricing = RepricingPolicy(engine, url, pause=pause)
    return projector, repricing


def serve(settings: Settings, host: str, port: int, workers: int = 1, log=print) -> None:
    """Run the HTTP API in the foreground.

    One worker serves the app object built here. Several workers are processes, one GIL each, so
    request handling uses every core; the parent resolves the database (starting the embedded
    one), migrates and fixes the secret key once and hands them to the workers in the
    environment. Projections must have a single writer, so with several workers the in-process
    projector runs once, in the parent (otherwise idle), not per worker; so does the repricing
    policy.
    """
    if workers == 1:
        _, app = build(settings, log)
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=settings.access_log)
        return
    url = database_url(settings, log)
    migrations.apply(url, log=log)
    os.environ.update(ETSYPRO_DATABASE_URL=url, ETSYPRO_SECRET_KEY=secret_key(settings, log), ETSYPRO_PROJECTOR="off",
                      ETSYPRO_REPRICING="off")
    # The parent's followers share one engine (its mapper decodes; the policy's commands use its pool).
    running_followers = [InBackground(follower, name).start() for follower, name in
                         zip(followers(settings, url, PricingEngine(url, pool_size=2)), ("projector", "repricing"))
                         if follower is not None]
    try:
        if REUSE_PORT:
            Workers(host, port, workers, settings.access_log, log).run()
        else:
            uvicorn.run("api.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                        log_level="info", access_log=settings.access_log)
    finally:
        for follower in reversed(running_followers):
            follower.stop()


def app_from_env():
    """The app of one worker process of `serve --workers N` (a uvicorn factory)."""
    return build(Settings.from_env(), log=lambda *_: None)[1]


REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
STARTUP_FAILURE = 3  # a worker's exit code when it cannot bind or build the app: no point restarting it


class Workers:
    """`count` uvicorn worker processes on one port, each listening on a socket of its own.

    uvicorn's own supervisor has its workers share one listening socket: whichever wakes first
    accepts a whole burst of new connections, and a keep-alive connection stays where it landed.
    The write benchmark's 8 clients connect at once: all 8 landed on one worker in 6 runs of 6
    (about half the runs before httptools), and one core waited while the other queued. With a
    socket each (SO_REUSEPORT), the kernel spreads new connections over the workers by a hash of
    their addresses. A worker that dies is started again; SIGINT or SIGTERM stops them all (each
    finishes the requests it has). The price of a socket each: connections the kernel had queued
    on a worker's socket when it died are reset rather than taken by another worker (clients
    retry; a command with an Idempotency-Key is safe to retry). tests/test_serve_workers.py.
    """

    def __init__(self, host: str, port: int, count: int, access_log: bool, log=print):
        self.args = (host, port, access_log)
        self.count, self.log = count, log
        self.context = multiprocessing.get_context("spawn")
        self.stopping = threading.Event()

    def run(self) -> None:
        self._refuse_taken_port()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        processes = [self._start() for _ in range(self.count)]
        try:
            while not self.stopping.wait(0.5):
                for i, process in enumerate(processes):
                    if process.is_alive():
                        continue
                    if process.exitcode == STARTUP_FAILURE:
                        raise SystemExit(f"a worker could not start (exit code {STARTUP_FAILURE}); see above")
                    self.log(f"worker {process.pid} exited with {process.exitcode}; starting another")
                    processes[i] = self._start()
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
            for process in processes:
                process.join(15)
                if process.is_alive():
                    process.kill()
                    process.join()

    def _refuse_taken_port(self) -> None:
        """Fail, as uvicorn does, when something listens on the port already: the workers' sockets
        would otherwise join the listening sockets of another `serve` and share its traffic."""
        host, port, _ = self.args
        with _listening_socket(host) as probe:
            try:
                probe.bind((host, port))
            except OSError as e:
                raise SystemExit(f"cannot listen on {host}:{port}: {e.strerror}") from None

    def _start(self):
        process = self.context.Process(target=_worker, args=self.args, name="etsypro-worker")
        process.start()
        return process


def _listening_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
    return sock


def _worker(host: str, port: int, access_log: bool) -> None:
    config = uvicorn.Config("api.server:app_from_env", factory=True, host=host, port=port, log_level="info",
                            access_log=access_log)
    try:
        sock = _listening_socket(host)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        config.load()  # builds the app: a failure here would fail again on every restart
    except (Exception, SystemExit):
        logging.getLogger("uvicorn.error").exception("worker could not start on %s:%s", host, port)
        sys.exit(STARTUP_FAILURE)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


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
