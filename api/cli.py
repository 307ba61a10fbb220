"""`etsypro` command line. Each subcommand is a function registered in COMMANDS below."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import codec
from api.progress import Progress
from api.settings import Settings


def serve(args) -> int:
    if args.workers > 1:  # before prometheus_client is imported: then this parent's counters are files the workers sum too
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="etsypro-metrics-")
    from api.server import serve as run

    from api.lifecycle import Terminated

    settings = Settings.from_env()
    try:
        run(settings, args.host or settings.host, args.port or settings.port, args.workers)
    except Terminated:  # uvicorn re-raises the SIGTERM it shut down on: a server stopped as asked
        pass
    return 0


def migrate(args) -> int:
    import migrations
    from api.server import database_url

    applied = migrations.apply(database_url(Settings.from_env()))
    print(f"{len(applied)} migration(s) applied; schema is current")
    return 0


def demo(args) -> int:
    from api.demo import run_demo

    return run_demo(Settings.from_env())


def bench_auth(args) -> int:
    from bench.auth import main as run

    return run(args)


def admin_create(args) -> int:
    """The first admin of a tenant (and any later one): the only account not made through the API."""
    import getpass

    from api.passwords import check_password
    from commands.context import CommandContext
    from domain.errors import CommandRefused
    from domain.errors import DomainError
    from domain.meta import Actor

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    try:
        check_password(password, args.username)
    except DomainError as e:
        print(f"refused: password {e.detail}", file=sys.stderr)
        return 1
    _, engine = _migrated_engine()
    try:
        ctx = CommandContext(actor=Actor("cli:admin-create"), tenant_id=args.tenant)
        created = engine.identity.create_account(ctx, args.username, "user", password, {"admin": None})
    except (DomainError, CommandRefused) as e:
        print(f"refused: {e.field}: {e.detail}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    print(f"admin {created.body['username']} created in tenant {args.tenant} (account {created.body['account_id']});"
          " log in with POST /auth/login {tenant, username, password}")
    return 0


def _tenant(text: str) -> str:
    import re

    from commands.models import TOKEN_PATTERN

    if not re.match(TOKEN_PATTERN, text):
        raise argparse.ArgumentTypeError("1-200 characters of letters, digits and ._:@/-")
    return text


def _username(text: str) -> str:
    """The API's rule for a new username (commands.models.Username), so the shell cannot store what
    POST /accounts would refuse."""
    from pydantic import TypeAdapter, ValidationError

    from commands.models import Username

    try:
        return TypeAdapter(Username).validate_python(text)
    except ValidationError as e:
        raise argparse.ArgumentTypeError(e.errors()[0]["msg"]) from None


def bench_write(args) -> int:
    from bench.write import main as run

    return run(args)


def audit_verify(args) -> int:
    import psycopg
    from psycopg_pool import PoolTimeout

    from api.server import database_url
    from read.side import ReadSide

    url = database_url(Settings.from_env(), log=lambda m: print(m, file=sys.stderr))
    reads = ReadSide(url, pool_size=1)
    try:
        if args.against:  # the signed head first (api/checkpoints.py), then the whole chain
            from api.checkpoints import anchored

            if (refused := anchored(args, url)) is not None:
                return refused
        with Progress("verifying the chain", unit="positions") as progress:
            report = reads.audit.verify_chain(args.from_position,
                                              progress=lambda checked, position, last: progress.update(position, last))
    except (psycopg.Error, PoolTimeout) as e:  # unreachable, or no event store yet (never migrated)
        print(f"cannot verify: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    finally:
        reads.close()
    if report.ok:
        print(f"ok: {report.checked} events verified up to position {report.last_position}; head {report.head}")
        return 0
    print(f"TAMPERED: first bad position {report.first_bad_position}: {report.problem}"
          f" ({report.checked} events verified before it)", file=sys.stderr)
    return 1


def _position(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("a position is a whole number from 1")
    return int(text)


def import_online_retail(args) -> int:
    from commands.importer import ImportFailed, find_file, run_import

    try:
        path = find_file(args.path)  # before any database work: a wrong path fails at once
    except ImportFailed as e:
        print(f"import failed: {e}", file=sys.stderr)
        return 1
    _, engine = _migrated_engine(pool_size=2)
    rejects = args.rejects or Settings.from_env().data_dir / "online_retail.rejects.csv"
    try:
        with Progress("importing", unit="rows", lines_when_piped=True) as progress:
            summary = run_import(engine.listings, path, args.tenant, args.shop_name, args.limit, rejects,
                                 lambda done, total, _elapsed: progress.update(done, total))
    except ImportFailed as e:
        print(f"import failed: {e}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    print("\n".join(summary.lines()))
    return 0


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("a count is a whole number from 1")
    return int(text)


def _migrated_url() -> str:
    """The configured (or embedded) database's url, migrated: all a reader or follower needs."""
    import migrations
    from api.server import database_url

    url = database_url(Settings.from_env(), log=lambda m: print(m, file=sys.stderr))
    migrations.apply(url, log=lambda *_: None)
    return url


def _migrated_engine(pool_size: int = 1):
    """(database url, the write application) on the configured (or embedded) database, migrated,
    with the server's keys: what it seals (a username, a reason) the server must open."""
    from api.server import use_server_keys
    from commands.engine import PricingEngine

    url = _migrated_url()
    engine = PricingEngine(url, pool_size=pool_size)
    use_server_keys(engine, Settings.from_env(), log=lambda m: print(m, file=sys.stderr))
    return url, engine


# -- the read side: projector, rebuild, lag -------------------------------------------------


def project(args) -> int:
    """Run the projector as its own process (use ETSYPRO_PROJECTOR=off on the servers then)."""
    import signal
    import threading
    import time

    from projections.projector import Projector, tune_gc

    url = _migrated_url()
    tune_gc()
    projector = Projector(url, codec.to_domain_event, batch_size=args.batch)
    started = time.monotonic()
    with Progress("catching up") as progress:
        covered = projector.catch_up(progress.update)
    print(f"caught up: {covered:,} events in {time.monotonic() - started:.1f}s", file=sys.stderr)
    if args.once:
        return 0
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print("following the event log (Ctrl-C to stop)", file=sys.stderr)
    projector.run(stop)
    projector.close()
    return 0


def projections_rebuild(args) -> int:
    from projections.projector import tune_gc
    from projections.rebuild import rebuild
    from projections.registry import ALL, by_name

    try:
        projections = ALL if args.name == "all" else (by_name(args.name),)
    except KeyError as e:
        print(e.args[0], file=sys.stderr)
        return 2
    url = _migrated_url()
    tune_gc()
    with Progress(f"rebuilding {args.name}") as progress:
        done = rebuild(url, codec.to_domain_event, projections, batch_size=args.batch,
                       progress=progress.update, fresh=args.fresh)
    resumed = f" (resumed from position {done.resumed_from:,})" if done.resumed_from else ""
    print(f"rebuilt {', '.join(done.projections)}{resumed}: replayed {done.events:,} events in {done.seconds:.1f}s;"
          f" swapped in at position {done.log_position:,}")
    return 0


def projections_status(args) -> int:
    import json

    import psycopg

    from projections.lag import operator_report
    from projections.registry import ALL

    url = _migrated_url()
    with psycopg.connect(url) as conn:
        report = operator_report(conn, [p.name for p in ALL])  # whole-log figures: operators only
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'follower':<20} {'position':>12} {'head':>12} {'events behind':>14} {'seconds behind':>15} {'parked':>7}")
    for x in report["projections"] + report["policies"]:
        print(f"{x['projection']:<20} {x['log_position']:>12,} {x['head']:>12,} {x['events_behind']:>14,}"
              f" {x['seconds_behind']:>15.3f} {x['parked']:>7,}")
    for p in report["parked"]:
        print(f"parked by {p['follower']}: event {p['log_position']} ({p['type']}, aggregate {p['aggregate_id']}"
              f" v{p['aggregate_version']}, shop {p['shop_id']}, tenant {p['tenant_id']}), {p['attempts']} attempt(s):"
              f" {p['error']}; {p['held_back']}")
    return 0


def projections_retry(args) -> int:
    from streams.parked import retry_all

    url, engine = _migrated_engine()
    done = retry_all(url, engine.rules)
    for follower, (resolved, remaining) in done.items():
        print(f"{follower}: {resolved:,} resolved, {remaining:,} still parked")
    print("nothing parked" if not done else f"{sum(r for _, r in done.values()):,} still parked in all")
    return 0


def bench_read(args) -> int:
    from bench.read import main as run

    return run(args)


def bench_kafka(args) -> int:
    from bench.kafka import main as run

    return run(args)


# -- the Kafka path: relay and faust workers (streams/) ------------------------------------
def _without_broker(command: str, bootstrap_servers: str) -> int | None:
    """Exit code 2 after one line saying so when no broker answers there; None when one does."""
    from streams.reachability import BrokerUnreachable, require_broker

    try:
        require_broker(bootstrap_servers)
    except BrokerUnreachable as e:
        print(f"etsypro {command}: {e}; start one, or point ETSYPRO_KAFKA_BOOTSTRAP or --bootstrap-servers"
              " at one that runs", file=sys.stderr)
        return 2
    return None


def _bootstrap(text: str) -> str:
    if not text or any(not part.rpartition(":")[2].isdigit() for part in text.split(",")):
        raise argparse.ArgumentTypeError("host:port[,host:port...]")
    return text


def relay(args) -> int:
    """Publish the event log to Kafka and follow it (one relay per name publishes at a time)."""
    import asyncio
    import signal

    from streams.relay import Relay
    from streams.wire import REPRICING_EVENT_TOPICS

    if (unreachable := _without_broker("relay", args.bootstrap_servers)) is not None:
        return unreachable
    url = _migrated_url()
    publisher = Relay(url, args.bootstrap_servers, name=args.name, page_size=args.page,
                      partitions=args.partitions, repricing_events=REPRICING_EVENT_TOPICS if args.repricing_topic else frozenset())

    async def run() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        if args.once:
            await publisher.catch_up()
        else:
            print(f"relay {args.name}: publishing the event log to {args.bootstrap_servers} (Ctrl-C to stop)",
                  file=sys.stderr)
            await publisher.run(stop)

    asyncio.run(run())
    print(f"relay {args.name}: published {publisher.stats.published:,} events; at log position"
          f" {publisher.stats.position:,}", file=sys.stderr)
    return 0


def worker(args) -> int:
    """A faust worker applying the projections from Kafka (exits on SIGINT/SIGTERM)."""
    from projections.projector import tune_gc
    from streams.workers import WorkerConfig, run

    if (unreachable := _without_broker("worker", args.bootstrap_servers)) is not None:
        return unreachable
    url = _migrated_url()
    tune_gc()
    datadir = Settings.from_env().data_dir / "faust" / args.app_id
    config = WorkerConfig(url, args.bootstrap_servers, app_id=args.app_id, batch=args.batch,
                          partitions=args.partitions, datadir=str(datadir))
    run(config, codec.to_domain_event, loglevel=args.loglevel)  # exits the process
    return 0


# -- automated repricing: the policy, explanations, the benchmark --------------------------
def reprice(args) -> int:
    """Run the repricing policy as its own process (use ETSYPRO_REPRICING=off on the servers then).
    It reads competitor prices from the projections: a projector must run (serve's or `project`)."""
    if args.kafka:
        return _reprice_from_kafka(args)
    import signal
    import threading

    from streams.repricing import RepricingPolicy

    url, engine = _migrated_engine()
    policy = RepricingPolicy(engine.rules, url, page_size=args.page)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if args.once:
            policy.catch_up(stop)
        else:
            print("repricing: following the event log (Ctrl-C to stop)", file=sys.stderr)
            policy.run(stop)
    finally:
        policy.close()
        engine.close()
    outcomes = ", ".join(f"{n} {outcome}" for outcome, n in sorted(policy.stats.outcomes.items())) or "no evaluations"
    print(f"repricing: at log position {policy.stats.position:,}; {outcomes}", file=sys.stderr)
    return 0


def rollback_guard(args) -> int:
    """Run the rollback guard's follower (streams/rollback_guard.py): once, or on a schedule."""
    import json
    import signal
    import threading

    from streams.rollback_guard import RollbackGuardFollower

    url, engine = _migrated_engine()
    follower = RollbackGuardFollower(engine.guards, url)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if args.once:
            trips = follower.check()
            print(json.dumps(trips, indent=2, default=str))
            return 0 if all("failed" not in t for t in trips) else 1
        print(f"rollback guard: checking every {args.every:g} s (Ctrl-C to stop)", file=sys.stderr)
        follower.run(stop, args.every)
    finally:
        engine.close()
    return 0


def _reprice_from_kafka(args) -> int:
    """The policy as a faust worker on the relay's repricing topic (exits on SIGINT/SIGTERM)."""
    from streams.repricing_worker import run
    from streams.workers import WorkerConfig

    if not args.bootstrap_servers:
        print("reprice --kafka: give --bootstrap-servers or set $ETSYPRO_KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2
    if args.once:
        print("reprice --kafka: --once follows the log; a worker runs until stopped", file=sys.stderr)
        return 2
    if (unreachable := _without_broker("reprice --kafka", args.bootstrap_servers)) is not None:
        return unreachable
    url, engine = _migrated_engine()
    datadir = Settings.from_env().data_dir / "faust" / args.app_id
    config = WorkerConfig(url, args.bootstrap_servers, app_id=args.app_id, batch=args.batch, datadir=str(datadir))
    run(config, engine.rules, loglevel=args.loglevel)  # exits the process
    return 0


def explain(args) -> int:
    """Why a listing has its price. The operator on the server's shell reads as the listing's own
    tenant (like `audit verify`, this is an operator's tool with the database's credentials)."""
    import json
    from uuid import UUID

    from api.audit_cli import read_side
    from commands.context import CommandContext
    from domain.listing import Listing
    from domain.meta import Actor, ActorKind
    from read.explain import as_text, explain as explain_listing

    reads = read_side()  # reasons people wrote, opened with the server's keys
    try:
        try:
            listing = reads.aggregates.replay(UUID(args.listing))
        except ValueError:
            listing = None
        if not isinstance(listing, Listing):
            print(f"listing {args.listing} not found", file=sys.stderr)
            return 1
        tenant = reads.aggregates.replay(listing.shop_id).tenant_id
        if args.tenant is not None and args.tenant != tenant:
            print(f"listing {args.listing} not found in tenant {args.tenant}", file=sys.stderr)
            return 1
        ctx = CommandContext(actor=Actor("cli:explain", ActorKind.SERVICE), tenant_id=tenant)
        report = explain_listing(reads.aggregates, ctx, listing.shop_id, listing.id, reads.audit.personal)
    finally:
        reads.close()
    print(json.dumps(report, indent=2) if args.json else as_text(report))
    return 0


def bench_pricing(args) -> int:
    from bench.pricing import main as run

    return run(args)


# -- demand models: refresh, stored answers, an analyst's table -------------------------------
def analyze_refresh(args) -> int:
    """Refit the demand models of one shop or all (resumes an interrupted pass over the same shops),
    then reprice the listings under an optimise-profit rule on their new runs (once per run)."""
    from read.model_runs import refresh
    from streams.repricing import act_on_new_runs

    url = _migrated_url()
    try:
        with Progress("fitting demand models", unit="fits") as progress:
            summary = refresh(url, args.shop, progress=progress.update)
    except LookupError as e:
        print(f"etsypro analyze refresh: {e}", file=sys.stderr)
        return 1
    print("\n".join(summary.lines()))
    _, engine = _migrated_engine()
    try:
        acted = act_on_new_runs(engine.rules, url, args.shop)
    finally:
        engine.close()
    changed = sum(1 for r in acted.results if r.outcome == "changed")
    print(f"optimise-profit listings: {len(acted.results)} repriced on their new runs ({changed} changed),"
          f" {acted.already} already acted on, {len(acted.failed)} failed (retried next time)")
    return 0 if not acted.failed else 1


def analyze_runs(args) -> int:
    """The stored runs of `elasticity`, `forecast` or `recommend` for a shop or one listing. An
    operator's tool on the server's shell (like `explain`): it reads any shop with the database's
    credentials."""
    import json

    import psycopg

    from codec.time_loaders import reading_adapters
    from read.model_runs import latest, latest_of_shop, public

    if args.csv is not None or args.shop is None:
        return _analyze_table(args)
    kind = {"elasticity": "elasticity", "forecast": "forecast", "recommend": "recommendation"}[args.analyze]
    with psycopg.connect(_migrated_url(), autocommit=True, context=reading_adapters()) as conn:
        if args.listing is not None or kind == "forecast":  # a shop's forecast is its own run (the shop level)
            found = latest(conn, args.shop, args.listing, kind)
            runs = [] if found is None else [found]
        else:
            runs = latest_of_shop(conn, args.shop, kind)
    if not runs:
        what = f"listing {args.listing}" if args.listing else f"shop {args.shop}"
        print(f"no {kind} model run for {what}: run `etsypro analyze refresh --shop {args.shop}`"
              " (or the shop or listing does not exist)", file=sys.stderr)
        return 1
    answers = [public(run, args.horizon if kind == "forecast" else None) for run in runs]
    if args.json:
        print(json.dumps(answers[0] if len(answers) == 1 else answers, indent=2))
    else:
        print("\n".join(_run_lines(kind, answers)))
    return 0


def _run_lines(kind: str, answers: list[dict]) -> list[str]:
    first = answers[0]
    lines = [f"{kind} runs of shop {first['shop_id']}, refreshed {first['created_at']}"]
    for a in answers:
        who = a["listing_id"] or "shop"
        window = f"{a['window']['first_day']}..{a['window']['last_day']}"
        if a["refused"]:
            lines.append(f"  {who:<36}  refused: {a['refusal']['reason']} (needs {a['refusal']['needs']})")
        elif kind == "elasticity":
            e = a["estimate"]
            lines.append(f"  {who:<36}  {e['elasticity']:>7.2f}  95% [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]"
                         f"  {e['label']:<16} n={e['n_days']:<4} {window}  {a['method']}")
        elif kind == "recommendation":
            r = a["recommendation"]
            move = f"{r['current_price']} -> {r['price']}" if r["moved"] else f"hold at {r['price']}"
            lines.append(f"  {who:<36}  {move:<20} {r['objective']} per day +{r['gain_per_day']}"
                         f" (pessimistic {r['pessimistic_gain_per_day']})")
        else:
            f = a["forecast"]
            ratio = f["mase_ratio_vs_snaive"]
            lines.append(f"  {who:<36}  {f['model']} ({f['tier']} tier), backtest MASE {f['mase']:.3f}"
                         f"{'' if ratio is None else f' ({ratio:.2f} x seasonal-naive)'}, window {window}")
            lines.append(f"  {'day':<12} {'units':>9} {'80%':>19} {'95%':>19} {'revenue':>12}")
            for p in f["points"]:
                lines.append(f"  {p['day']:<12} {p['units']:>9.2f} {p['units_80']['lower']:>9.2f}-{p['units_80']['upper']:<9.2f}"
                             f" {p['units_95']['lower']:>9.2f}-{p['units_95']['upper']:<9.2f} {p['revenue']:>12}"
                             + ("  closed" if p["closed"] else ""))
    lines.append(f"  ({first['caveat']})")
    return lines


def _analyze_table(args) -> int:
    """`analyze elasticity --csv FILE --price COL --quantity COL`: the estimator on any table. Exit
    2, naming the column, when the input cannot be read or the estimator refuses it."""
    import json
    from dataclasses import asdict

    import polars as pl

    from domain.demand.elasticity import Refusal, estimate_table

    if args.analyze != "elasticity" or args.csv is None or not (args.price and args.quantity):
        print(f"etsypro analyze {args.analyze}: give --shop S (stored runs)"
              + (" or --csv FILE --price COL --quantity COL (an analyst's table)" if args.analyze == "elasticity" else ""),
              file=sys.stderr)
        return 2
    try:
        table = pl.read_csv(args.csv, infer_schema_length=None)
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as e:
        print(f"cannot read {args.csv}: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    controls = [c.strip() for c in args.controls.split(",") if c.strip()] if args.controls else []
    result = estimate_table(table, args.price, args.quantity, args.date, controls)
    if isinstance(result, Refusal):
        column = f" (column {result.field!r})" if result.field else ""
        print(f"refused{column}: {result.reason}; needs {result.needs}", file=sys.stderr)
        if args.json:
            print(json.dumps({"refused": True, **asdict(result)}, indent=2))
        return 2
    if args.json:
        print(json.dumps({"refused": False, **asdict(result)}, indent=2, allow_nan=False))
        return 0
    low, high = result.ci95
    d = result.diagnostics
    print(f"elasticity {result.elasticity:.3f}  95% interval [{low:.3f}, {high:.3f}]  se {result.se:.3f}\n"
          f"n {result.n_days} rows, {result.distinct_prices} distinct prices {result.price_range[0]:g}-"
          f"{result.price_range[1]:g}, {result.total_units:g} units\n"
          f"method {result.method} [{result.family}]; controls {', '.join(result.controls) or 'none'}\n"
          f"diagnostics: deviance {d.deviance:.2f}, Pearson dispersion {d.pearson_dispersion:.2f}, "
          f"{d.covariance}, {d.iterations} iterations"
          + (f", NB alpha {d.nb_alpha:.3f}" if d.nb_alpha is not None else "")
          + (f"; warnings: {'; '.join(d.warnings)}" if d.warnings else "")
          + f"\n({result.caveat})")
    return 0


def _uuid(text: str):
    from uuid import UUID

    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a UUID, e.g. 55d95577-b375-455a-8c80-879603d12831") from None


def _horizon(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 90:
        raise argparse.ArgumentTypeError("a whole number of days from 1 to 90")
    return int(text)


def bench_analyze(args) -> int:
    from bench.analyze import main as run

    return run(args)


def bench_experiments(args) -> int:
    from bench.experiments import main as run

    return run(args)


def bench_ui(args) -> int:
    from bench.ui import main as run

    return run(args)


def bench_simulate(args) -> int:
    from bench.simulate import main as run

    return run(args)


def simulate_market(args) -> int:
    """The market simulator (bench/market.py): strategies through the engine in a scratch database."""
    import json
    import time

    from bench.common import fresh_database
    from bench.market import lines, simulate
    from bench.options import STRATEGIES
    from domain.rollback_guard import GuardSettings

    strategies = tuple(dict.fromkeys(args.strategy or STRATEGIES))
    with fresh_database("etsypro_sim") as (url, _), Progress("simulated days", args.days, unit="days") as progress:
        started = time.monotonic()
        guard = None if args.guard is None else GuardSettings(periods=args.guard).check()
        result = simulate(url, args.days, args.listings, args.seed, strategies, progress.update, guard)
        seconds = time.monotonic() - started
    result |= {"seconds": round(seconds, 1), "simulated_days_per_s": round(args.days / seconds, 3)}
    print("\n".join(lines(result, seconds)))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="etsypro", description="EtsyPro Pricing engine")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP API (embedded PostgreSQL unless ETSYPRO_DATABASE_URL is set)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=_count, default=1,
                   help="HTTP worker processes (default 1); use about one per core (login rate limits are per worker unless ETSYPRO_REDIS_URL is set)")
    s.set_defaults(func=serve)

    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(func=migrate)
    sub.add_parser("demo", help="create a demo shop through the real API and print what happened").set_defaults(func=demo)
    # Further subcommands register here: one add_parser + set_defaults each.

    pj = sub.add_parser("project", help="run the projector as its own process: catch up, then follow the log")
    pj.add_argument("--once", action="store_true", help="stop once caught up")
    pj.add_argument("--batch", type=_count, default=10_000, help="events per transaction (default 10000)")
    pj.set_defaults(func=project)

    pr = sub.add_parser("projections", help="the read side's projections")
    prs = pr.add_subparsers(dest="projections", required=True)
    rb = prs.add_parser("rebuild", help="replay the whole log into fresh tables, then swap them in atomically")
    rb.add_argument("name", help="price_board | price_changes | competitor_prices | sales | all (one replay)")
    rb.add_argument("--fresh", action="store_true", help="discard an interrupted rebuild instead of resuming it")
    rb.add_argument("--batch", type=_count, default=10_000, help="events per transaction (default 10000)")
    rb.set_defaults(func=projections_rebuild)
    st = prs.add_parser("status", help="each projection's and policy's position, lag and parked events (whole log)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=projections_status)
    rt = prs.add_parser("retry", help="apply the events followers parked (projections/parking.py) again")
    rt.set_defaults(func=projections_retry)

    b = sub.add_parser("bench", help="measure the engine on this machine and print the figures")
    benches = b.add_subparsers(dest="bench", required=True)  # one add_parser per benchmark (write, read, ...)
    as_json = argparse.ArgumentParser(add_help=False)  # every benchmark's --json (argparse's `parents`)
    as_json.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    w = benches.add_parser("write", parents=[as_json], help="ingest vs raw COPY, HTTP price changes, listing load time")
    w.add_argument("--events", dest="ingest_events", type=_count, metavar="N", help="observations to ingest (default 200000)")
    w.add_argument("--batch", type=_count, metavar="N", help="observations per command (default and most 10000)")
    w.add_argument("--ingest-clients", type=_count, metavar="N",
                   help="concurrent ingesting clients for the second half of (a) (default one per core, up to 4)")
    w.add_argument("--commands", type=_count, metavar="N", help="measured HTTP price changes (default 5000)")
    w.add_argument("--clients", type=_count, metavar="N", help="concurrent keep-alive HTTP clients (default 8)")
    w.add_argument("--workers", type=_count, metavar="N", help="server worker processes (default one per core, up to 4)")
    w.add_argument("--http-client", choices=("raw", "httpx"), help="load generator (default raw: lean asyncio HTTP/1.1)")
    w.add_argument("--large", dest="load_large", type=_count, metavar="N", help="observations for the large load case (default 100000)")
    w.set_defaults(func=bench_write)
    ba = benches.add_parser("auth", parents=[as_json], help="login latency over HTTP (argon2 verify) and the argon2 parameters")
    ba.add_argument("--logins", type=int, help="measured logins (default 300)")
    ba.set_defaults(func=bench_auth)
    br = benches.add_parser("read", parents=[as_json], help="projector catch-up, rebuild, live lag and analyst queries on 1M events")
    br.add_argument("--events", type=_count, help="events in the log (default 1000000)")
    br.add_argument("--batch", type=_count, help="projector events per transaction (default 10000)")
    br.set_defaults(func=bench_read)
    bk = benches.add_parser("kafka", parents=[as_json], help="relay -> Kafka (local Tansu) -> faust worker -> views, end to end")
    bk.add_argument("--events", type=_count, help="events relayed and applied (default 100000)")
    bk.add_argument("--batch", type=_count, help="worker records per transaction (default 2000)")
    bk.set_defaults(func=bench_kafka)
    bp = benches.add_parser("pricing", parents=[as_json], help="rule evaluations per second; observation -> automated price change latency")
    bp.add_argument("--evaluations", type=_count, help="rule evaluations measured (default 200000)")
    bp.add_argument("--reprices", type=_count, help="observations measured end to end (default 300)")
    bp.set_defaults(func=bench_pricing)
    bz = benches.add_parser("analyze", parents=[as_json], help="demand models: fits per second on the shared history, "
                            "the three GETs' p95 vs a raw SELECT, calibration and forecast figures")
    bz.add_argument("--seeds", type=_count, help="seeds per true elasticity for the calibration (default 20)")
    bz.add_argument("--origins", type=_count, help="outer origins of the shop forecast's backtest (default 4)")
    bz.add_argument("--requests", type=_count, help="GETs measured per route (default 300)")
    bz.add_argument("--listings", type=_count, help="listings of the synthetic shop whose reads are timed (default 20)")
    bz.add_argument("--retail-url", help="a database holding the imported shared shop: also time its whole refresh")
    bz.set_defaults(func=bench_analyze)
    bx = benches.add_parser("experiments", parents=[as_json], help="switchback experiments: A/A false positives "
                            "(fixed horizon, mSPRT with peeking), A/B interval coverage and power vs the promise")
    bx.add_argument("--aa-runs", type=_count, default=1000, help="A/A simulations (default 1000)")
    bx.add_argument("--ab-runs", type=_count, default=500, help="A/B simulations (default 500)")
    from bench.options import market_options

    market_options(bx)  # the simulated market behind optimizer_oracle_ratio and simulated_days_per_s
    bx.set_defaults(func=bench_experiments)
    bu = benches.add_parser("ui", parents=[as_json], help="dashboard: board first paint (1,000 listings, headless Chromium),"
                            " event-to-page latency with 100 SSE clients, server memory per client")
    bu.add_argument("--listings", type=_count, help="listings on the board (default 1000)")
    bu.add_argument("--clients", type=_count, help="open SSE clients (default 100)")
    bu.add_argument("--changes", type=_count, help="price changes timed (default 40)")
    bu.set_defaults(func=bench_ui)
    rg = sub.add_parser("rollback-guard", help="roll back automated changes whose listings fall below the forecast's"
                        " lower bound for the shop's configured days, and stop their automation")
    rg.add_argument("--once", action="store_true", help="check once, print the trips as JSON and exit")
    rg.add_argument("--every", type=float, default=3600.0, help="seconds between checks (default 3600)")
    rg.set_defaults(func=rollback_guard)
    from bench.options import ALL_STRATEGIES, STRATEGIES, market_size, simulate_options

    bsim = benches.add_parser("simulate", parents=[as_json], help="market simulator: the optimiser against"
                              " the oracle over seeds, simulated days per second")
    simulate_options(bsim)
    bsim.set_defaults(func=bench_simulate)
    sm = sub.add_parser("simulate", help="simulate a market through the engine (a scratch database, dropped after):"
                        " each strategy's profit and revenue against the oracle, and the regret")
    market_size(sm)
    sm.add_argument("--seed", type=int, default=1)
    sm.add_argument("--strategy", action="append", choices=ALL_STRATEGIES,
                    help=f"repeat for several (default: {', '.join(STRATEGIES)})")
    sm.add_argument("--guard", type=_count, metavar="DAYS", help="run the rollback guard on the automated shops: "
                    "revenue below the forecast's 80%% lower bound for DAYS consecutive days rolls back")
    sm.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE")
    sm.set_defaults(func=simulate_market)

    kafka = {"type": _bootstrap, "default": os.environ.get("ETSYPRO_KAFKA_BOOTSTRAP"),
             "required": not os.environ.get("ETSYPRO_KAFKA_BOOTSTRAP"),
             "help": "Kafka bootstrap servers host:port[,...] (default $ETSYPRO_KAFKA_BOOTSTRAP)"}
    rl = sub.add_parser("relay", help="publish the event log to Kafka topics, keyed by aggregate id, and follow it")
    rl.add_argument("--bootstrap-servers", **kafka)
    rl.add_argument("--name", default="default", help="the relay's name: where its position is recorded")
    rl.add_argument("--page", type=_count, default=5000, help="events per page read and acknowledged (default 5000)")
    rl.add_argument("--partitions", type=_count, default=8, help="partitions of topics it creates (default 8)")
    rl.add_argument("--once", action="store_true", help="stop once the head of the log is published")
    rl.add_argument("--repricing-topic", action="store_true",
                    help="also publish the repricing policy's events keyed by shop, for `reprice --kafka`"
                         " (it publishes every observation twice)")
    rl.set_defaults(func=relay)
    wk = sub.add_parser("worker", help="a faust-streaming worker applying the projections from the Kafka topics")
    wk.add_argument("--bootstrap-servers", **kafka)
    wk.add_argument("--app-id", default="etsypro-projections",
                    help="consumer group and sink name; workers with the same id share the partitions")
    wk.add_argument("--batch", type=_count, default=2000, help="records per transaction at most (default 2000)")
    wk.add_argument("--partitions", type=_count, default=8, help="partitions of topics it creates (default 8)")
    wk.add_argument("--loglevel", default="warning", choices=("debug", "info", "warning", "error"))
    wk.set_defaults(func=worker)

    rp = sub.add_parser("reprice", help="run the automated repricing policy as its own process (needs a projector)")
    rp.add_argument("--once", action="store_true", help="stop once the head of the log is acted on")
    rp.add_argument("--page", type=_count, default=1000, help="events per page (default 1000)")
    rp.add_argument("--kafka", action="store_true",
                    help="run as a faust worker on the relay's repricing topic instead of following the log")
    rp.add_argument("--bootstrap-servers", type=_bootstrap, default=os.environ.get("ETSYPRO_KAFKA_BOOTSTRAP"),
                    help="with --kafka: Kafka bootstrap servers host:port[,...] (default $ETSYPRO_KAFKA_BOOTSTRAP)")
    rp.add_argument("--app-id", default="etsypro-repricing",
                    help="with --kafka: consumer group and counters' name; workers with the same id share the shops")
    rp.add_argument("--batch", type=_count, default=1000, help="with --kafka: records per batch at most (default 1000)")
    rp.add_argument("--loglevel", default="warning", choices=("debug", "info", "warning", "error"),
                    help="with --kafka: the worker's log level")
    rp.set_defaults(func=reprice)
    ex = sub.add_parser("explain", help="why a listing has its price: the events, rule version, observations, clamps")
    ex.add_argument("listing", help="the listing's id")
    ex.add_argument("--tenant", type=_tenant, help="refuse unless the listing belongs to this tenant")
    ex.add_argument("--json", action="store_true", help="the JSON the API answers, instead of text")
    ex.set_defaults(func=explain)

    an = sub.add_parser("analyze", help="demand models: refit them, read their stored answers, or fit an analyst's CSV")
    analyses = an.add_subparsers(dest="analyze", required=True)
    ar = analyses.add_parser("refresh", help="refit elasticities, forecasts and recommendations (one transaction per shop;"
                                             " an interrupted run resumes)")
    ar.add_argument("--shop", type=_uuid, help="only this shop (default: every shop)")
    ar.set_defaults(func=analyze_refresh)
    for name, what in (("elasticity", "price elasticities"), ("forecast", "daily forecasts"),
                       ("recommend", "recommended prices")):
        ak = analyses.add_parser(name, help=f"the stored {what} of a shop or listing"
                                 + (", or the estimator on a CSV (--csv)" if name == "elasticity" else ""))
        ak.add_argument("--shop", type=_uuid, help="the shop whose stored runs to show")
        ak.add_argument("--listing", type=_uuid, help="one listing of the shop (default: all; forecast: the shop's total)")
        ak.add_argument("--json", action="store_true", help="the JSON the API answers, instead of a table")
        if name == "forecast":
            ak.add_argument("--horizon", type=_horizon, default=30, help="days ahead, 1-90 (default 30)")
        if name == "elasticity":
            ak.add_argument("--csv", metavar="FILE", help="fit a table instead: one row per period (exit 2 on bad input)")
            ak.add_argument("--price", metavar="COL", help="with --csv: the price column")
            ak.add_argument("--quantity", metavar="COL", help="with --csv: the quantity column")
            ak.add_argument("--date", metavar="COL", help="with --csv: a date column (weekday and trend controls, HAC)")
            ak.add_argument("--controls", metavar="COL,...", help="with --csv: more control columns, comma-separated")
        ak.set_defaults(func=analyze_runs, **({} if name == "elasticity" else {"csv": None}),
                        **({} if name == "forecast" else {"horizon": None}))

    ad = sub.add_parser("admin", help="manage accounts from the server's shell")
    admins = ad.add_subparsers(dest="admin", required=True)
    ac = admins.add_parser("create", help="create an admin account for a tenant (the first one, typically)")
    ac.add_argument("--tenant", required=True, type=_tenant, help="the tenant the admin manages")
    ac.add_argument("--username", required=True, type=_username)
    ac.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    ac.set_defaults(func=admin_create)

    a = sub.add_parser("audit", help="audit the event log")
    audits = a.add_subparsers(dest="audit", required=True)
    v = audits.add_parser("verify", help="recompute the hash chain; exit 1 naming the first bad position")
    v.add_argument("--from-position", type=_position, help="start here, trusting the stored hash just before it")
    v.set_defaults(func=audit_verify)
    from api.checkpoints import add_parsers as add_checkpoints

    add_checkpoints(audits, v)  # audit keygen|checkpoint, verify --against
    from api.audit_cli import add_parsers as add_audit_reads

    add_audit_reads(audits)  # audit history|events|export

    imp = sub.add_parser("import", help="import external data through the command handlers")
    sources = imp.add_subparsers(dest="source", required=True)  # one add_parser per data source
    o = sources.add_parser("online-retail", help="the UCI Online Retail history as one GBP shop (resumable)")
    o.add_argument("path", nargs="?", help="parquet file (default ../shared/data/online_retail.parquet)")
    o.add_argument("--shop-name", default="Online Retail (UCI)")
    o.add_argument("--tenant", default="online-retail")
    o.add_argument("--limit", type=_count, help="import only the first N sale lines of the file")
    o.add_argument("--rejects", type=Path, help="CSV of set-aside lines (default $ETSYPRO_DATA_DIR/online_retail.rejects.csv)")
    o.set_defaults(func=import_online_retail)
    from api.csv_imports import add_feed_parser, add_parsers as add_csv_imports

    add_csv_imports(sources)  # etsy-order-items, etsy-orders, etsy-listings, competitor-prices
    add_feed_parser(sub)  # etsypro feed: the competitor price feed on Kafka
    from api.etsy import add_parsers as add_etsy

    add_etsy(sub, benches, as_json)  # etsy push|sync, fake-etsy, bench etsy
    from api.backup import add_parsers as add_backup

    add_backup(sub)  # etsypro backup|restore
    from api.erase_cli import add_parsers as add_erase

    add_erase(sub)  # etsypro erase account|buyer|reason
    from api.rotation_cli import add_parsers as add_rotation

    add_rotation(sub)  # etsypro rotate-secret
    return p


def main(argv: list[str] | None = None) -> int:
    from api.lifecycle import Terminated, exit_cleanly_on_signals

    exit_cleanly_on_signals()  # before anything starts the embedded PostgreSQL
    args = parser().parse_args(argv)
    if args.command in ("project", "reprice", "relay", "worker", "feed", "rollback-guard"):  # long-running: log as serve does
        from api import logs

        logs.configure(Settings.from_env().log_format)
    try:
        return args.func(args) or 0
    except Terminated as stop:
        print(f"etsypro {args.command}: stopped by {signal_name(stop.signum)}", file=sys.stderr)
        return stop.code
    except KeyboardInterrupt:
        print(f"etsypro {args.command}: stopped by SIGINT", file=sys.stderr)
        return 130


def signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


if __name__ == "__main__":
    sys.exit(main())
