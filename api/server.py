"""Wiring: from settings to a database, a migrated schema, an engine and a running HTTP server."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta

import uvicorn
from prometheus_client import multiprocess

import migrations
import codec
from api import checkpoints, etsy, logs, metrics
from api.app import create_app
from api.auth import AuthSettings, trusted_proxies
from api.observability import Observability
from api.database import start_embedded
from api.settings import Settings
from commands.engine import PricingEngine
from projections.projector import InBackground, Projector, tune_gc
from read.model_runs import ScheduledRefresh
from streams.repricing import RepricingPolicy, act_on_new_runs
from streams.rollback_guard import RollbackGuardFollower


def database_url(settings: Settings, log=print) -> str:
    if settings.database_url:
        return settings.database_url
    url = start_embedded(settings.data_dir / "postgres")
    log(f"embedded PostgreSQL running, data in {settings.data_dir / 'postgres'}")
    return url


def build(settings: Settings, log=print):
    """Migrate and return (engine, FastAPI app)."""
    tune_gc()  # a 10,000-observation command allocates like a projector's page
    logs.configure(settings.log_format)
    url = database_url(settings, log)
    migrations.apply(url, log=log)
    engine = PricingEngine(url, pool_size=settings.pool_size)
    use_server_keys(engine, settings, log)
    auth_settings = AuthSettings(access_token_ttl=timedelta(minutes=settings.access_token_minutes),
                                 login_per_minute=settings.login_per_minute,
                                 principal_cache_s=settings.principal_cache_ms / 1000,
                                 trusted_proxies=trusted_proxies(settings.trusted_proxies),
                                 rate_limit_storage=settings.redis_url or "memory://")
    app = create_app(engine, settings.max_body_bytes, auth_settings, Observability.from_settings(settings))
    projector, repricing = followers(settings, url, engine)
    if projector is not None:
        app.state.projector = InBackground.projector(projector)
    if repricing is not None:
        app.state.repricing = InBackground(repricing, "repricing")
    app.state.analyzer = refresher(settings, url, engine)
    if app.state.analyzer is not None:
        _alongside(app, app.state.analyzer)
    if (publisher := checkpoints.scheduled(settings, url)) is not None:  # signed chain heads (ETSYPRO_CHECKPOINT_KEY)
        _alongside(app, InBackground(publisher, "checkpoints"))
    app.state.etsy_workers = etsy.in_serve(engine) if settings.repricing == "inprocess" else []
    for worker in app.state.etsy_workers:  # pushes prices to Etsy and syncs connected shops (ETSYPRO_ETSY_*)
        _alongside(app, worker)
    app.state.rollback_guard = rollback_guard(settings, url, engine)
    if app.state.rollback_guard is not None:
        _alongside(app, app.state.rollback_guard)
    return engine, app


def refresher(settings: Settings, url: str, engine: PricingEngine | None) -> InBackground | None:
    """The demand models' scheduled refresh (ETSYPRO_ANALYZE_EVERY_HOURS; 0: none), not started. With
    the repricing policy in this process, each refresh is followed by repricing the optimise-profit
    listings on their new runs (else `etsypro analyze refresh` or the policy's process does it)."""
    if settings.analyze_every_hours <= 0:
        return None
    acts = settings.repricing == "inprocess" and engine is not None
    after = (lambda _summary: act_on_new_runs(engine.rules, url)) if acts else None
    return InBackground(ScheduledRefresh(url, settings.analyze_every_hours, after=after), "analyze")


def rollback_guard(settings: Settings, url: str, engine: PricingEngine | None) -> InBackground | None:
    """The rollback guard's scheduled check (ETSYPRO_ROLLBACK_GUARD_EVERY_MINUTES; 0: none), not started.
    It issues commands, so it runs where the repricing policy does (else `etsypro rollback-guard`)."""
    if settings.rollback_guard_every_minutes <= 0 or settings.repricing != "inprocess" or engine is None:
        return None
    follower = RollbackGuardFollower(engine.guards, url, every_seconds=settings.rollback_guard_every_minutes * 60)
    return InBackground(follower, "rollback-guard")


def _alongside(app, background: InBackground) -> None:
    """Run `background` for as long as the app runs: started before the app's own lifespan (its
    followers, its read pool) and stopped after it."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(served):
        background.start()
        try:
            async with inner(served) as state:
                yield state
        finally:
            background.stop()

    app.router.lifespan_context = lifespan


def followers(settings: Settings, url: str, engine: PricingEngine | None):
    """(projector, repricing policy) to run in this process, as the settings ask (None: elsewhere)."""
    projector = repricing = None
    pause = settings.follow_pause_s  # see projections.projector.follow_log
    if settings.projector == "inprocess":  # else run `etsypro project` as its own process
        projector = Projector(url, codec.to_domain_event, pause=pause)
    if settings.repricing == "inprocess":  # else run `etsypro reprice` as its own process
        repricing = RepricingPolicy(engine.rules, url, pause=pause)
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
        # Logging is api/logs.py's; the request lines are api/observability.py's (ETSYPRO_ACCESS_LOG).
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, log_config=None,
                    proxy_headers=False)  # the app reads X-Forwarded-For from ETSYPRO_TRUSTED_PROXIES only
        return
    logs.configure(settings.log_format)
    url = database_url(settings, log)
    migrations.apply(url, log=log)
    # The workers' counters (and this parent's: its policy's commands), summed by /metrics; `etsypro serve`
    # makes the directory before prometheus_client is first imported, which is when it picks file-backed values.
    metrics_dir = os.environ.get(metrics.MULTIPROC_ENV) or tempfile.mkdtemp(prefix="etsypro-metrics-")
    os.environ.update(PROMETHEUS_MULTIPROC_DIR=metrics_dir, ETSYPRO_DATABASE_URL=url, ETSYPRO_SECRET_KEY=secret_key(settings, log), ETSYPRO_PROJECTOR="off",
                      ETSYPRO_REPRICING="off", ETSYPRO_ANALYZE_EVERY_HOURS="0", ETSYPRO_CHECKPOINT_KEY="")
    # The projector decodes with the codec; only the repricing policy issues commands, so only it needs the engine.
    engine = PricingEngine(url, pool_size=2) if settings.repricing == "inprocess" else None
    if engine is not None:
        metrics.instrument(engine)
    running_followers = [InBackground(follower, name).start() for follower, name in
                         zip(followers(settings, url, engine), ("projector", "repricing"))
                         if follower is not None]
    analyzer = refresher(settings, url, engine)  # in the parent, like the followers: the workers' env says 0
    if analyzer is not None:
        running_followers.append(analyzer.start())
    if (publisher := checkpoints.scheduled(settings, url)) is not None:  # in the parent too: the workers' env unsets the key
        running_followers.append(InBackground(publisher, "checkpoints").start())
    if (guard := rollback_guard(settings, url, engine)) is not None:  # beside the policy, in the parent
        running_followers.append(guard.start())
    if engine is not None:  # the Etsy push and sync beside the policy, in the parent
        running_followers += [worker.start() for worker in etsy.in_serve(engine)]
    try:
        if HAND_OVER:
            Workers(host, port, workers, settings.access_log, log).run()
        else:
            uvicorn.run("api.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                        log_level="info", access_log=False, log_config=None, proxy_headers=False)
    finally:
        for follower in reversed(running_followers):
            follower.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def app_from_env():
    """The app of one worker process of `serve --workers N` (a uvicorn factory)."""
    return build(Settings.from_env(), log=lambda *_: None)[1]


HAND_OVER = hasattr(socket, "send_fds")  # Unix: a process may pass an accepted connection to another
STARTUP_FAILURE = 3  # a worker's exit code when it cannot build the app: no point restarting it


class Workers:
    """`count` uvicorn worker processes behind one listening socket, which this process accepts on:
    each new connection goes to the next worker in turn, passed over a Unix socket (SCM_RIGHTS).

    Why not let the kernel choose: uvicorn's own supervisor has its workers share the listening
    socket, and whichever wakes first accepts a whole burst. With a socket per worker
    (SO_REUSEPORT) the kernel picks by a hash of the addresses, often unevenly, and a keep-alive
    connection stays where it landed, so one core queues while the other idles (figures in
    docs/performance.md). In turn, 8 connections are 4 and 4. A worker that dies is started again
    and skipped meanwhile; the connections it held (or had not yet taken) are reset, and clients
    retry (a command with an Idempotency-Key is safe to retry). SIGINT or SIGTERM stops them all,
    each finishing the requests it has. tests/test_serve_workers.py.
    """

    def __init__(self, host: str, port: int, count: int, access_log: bool, log=print):
        self.host, self.port, self.access_log = host, port, access_log
        self.count, self.log = count, log
        self.context = multiprocessing.get_context("spawn")
        self.stopping = threading.Event()
        self.channels: list[socket.socket] = []  # this process's end of each worker's hand-over socket

    def run(self) -> None:
        listener = _listening_socket(self.host)
        try:
            listener.bind((self.host, self.port))
        except OSError as e:
            raise SystemExit(f"cannot listen on {self.host}:{self.port}: {e.strerror}") from None
        listener.listen(2048)
        listener.settimeout(0.5)  # to see `stopping`
        self.log(f"serving http://{self.host}:{self.port} with {self.count} worker processes (Press CTRL+C to quit)")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        started = [self._start() for _ in range(self.count)]
        processes, self.channels = [p for p, _ in started], [c for _, c in started]
        acceptor = threading.Thread(target=self._accept, args=(listener,), name="etsypro-acceptor", daemon=True)
        acceptor.start()
        try:
            self._supervise(processes)
        finally:
            acceptor.join()
            listener.close()
            self._stop(processes)

    def _supervise(self, processes: list) -> None:
        while not self.stopping.wait(0.5):
            for i, process in enumerate(processes):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    raise SystemExit(f"a worker could not start (exit code {STARTUP_FAILURE}); see above")
                self.log(f"worker {process.pid} exited with {process.exitcode}; starting another")
                multiprocess.mark_process_dead(process.pid)  # its live gauges (pool usage) no longer count
                self.channels[i].close()
                processes[i], self.channels[i] = self._start()

    def _accept(self, listener: socket.socket) -> None:
        turn = 0
        while not self.stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:  # the worker holds its own descriptor once passed
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small replies go out at once
                turn = self._hand_over(connection, turn)

    def _hand_over(self, connection: socket.socket, turn: int) -> int:
        """Pass the connection to the first worker, from `turn` on, that takes it (a dead or
        stuck one refuses); the turn after it."""
        channels = list(self.channels)
        for i in range(turn, turn + len(channels)):
            try:
                socket.send_fds(channels[i % len(channels)], [b"c"], [connection.fileno()])
                return i + 1
            except OSError:
                continue
        return turn  # no worker took it: it is closed, and the client retries

    def _start(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)  # a stuck worker must not stall the acceptor
        process = self.context.Process(target=_worker, args=(theirs, self.access_log), name="etsypro-worker")
        process.start()
        theirs.close()
        return process, ours

    @staticmethod
    def _stop(processes: list) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(15)
            if process.is_alive():
                process.kill()
                process.join()


def _listening_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
    return sock


class _HandedOver(uvicorn.Server):
    """A uvicorn server with no listening socket of its own: it serves the connections the parent
    process accepted and passes over `channel`."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket):
        super().__init__(config)
        self.channel = channel

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=[])
        if self.started:
            self.channel.setblocking(False)
            asyncio.get_running_loop().add_reader(self.channel, self._take_connections)

    async def shutdown(self, sockets=None) -> None:
        asyncio.get_running_loop().remove_reader(self.channel)  # what the parent still sends is reset
        await super().shutdown(sockets)

    def _take_connections(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self.channel, 1, 1)
            except BlockingIOError:
                return
            if not message:  # the parent is gone
                loop.remove_reader(self.channel)
                self.should_exit = True
                return
            for fd in fds:
                loop.create_task(loop.connect_accepted_socket(self._protocol, socket.socket(fileno=fd)))

    def _protocol(self) -> asyncio.Protocol:
        """What uvicorn's own startup makes for each connection it accepts."""
        return self.config.http_protocol_class(config=self.config, server_state=self.server_state,
                                               app_state=self.lifespan.state)


def _worker(channel: socket.socket, access_log: bool) -> None:
    config = uvicorn.Config("api.server:app_from_env", factory=True, log_level="info", access_log=False,
                            log_config=None, proxy_headers=False)  # see serve()
    try:
        config.load()  # builds the app: a failure here would fail again on every restart
    except (Exception, SystemExit):
        logging.getLogger("uvicorn.error").exception("worker could not build the app")
        sys.exit(STARTUP_FAILURE)
    server = _HandedOver(config, channel)
    server.run()
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


def use_server_keys(engine: PricingEngine, settings: Settings, log=print) -> None:
    """What every process holding the engine does: the server key, and during a rotation the previous one."""
    engine.identity.use_secret_key(secret_key(settings, log), previous_secret_key(settings))


def previous_secret_key(settings: Settings) -> str | None:
    """ETSYPRO_SECRET_KEY_PREVIOUS: the key being retired while a rotation runs (docs/operations.md)."""
    return settings.secret_key_previous


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, host: str = "127.0.0.1", port: int | None = None):
    """Serve app with uvicorn in a background thread; yields the base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           proxy_headers=False))  # see serve()
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
