"""`etsypro import etsy-order-items|etsy-orders|etsy-listings|competitor-prices FILE --shop S`:
a seller's CSV file through the command handlers (commands/etsy_import.py), from the server's shell."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from api.progress import Progress
from api.settings import Settings

HELP = {
    "etsy-order-items": "Etsy's EtsySoldOrderItems export: sales, once per Transaction ID (resumable)",
    "etsy-orders": "Etsy's EtsySoldOrders export: orders' totals, once per Order ID (resumable)",
    "etsy-listings": "Etsy's EtsyListingsDownload: new SKUs become listings (resumable)",
    "competitor-prices": "a competitor price feed: each observation once (resumable)",
}


def add_parsers(sources) -> None:
    """One `etsypro import <kind>` per kind, on the import command's subparsers."""
    from api.cli import _uuid

    for kind, text in HELP.items():
        p = sources.add_parser(kind, help=text)
        p.add_argument("path", type=Path, help="the CSV file")
        p.add_argument("--shop", required=True, type=_uuid, help="the shop's id")
        p.add_argument("--skip-invalid", action="store_true",
                       help="import the valid lines and report the others (default: any invalid line refuses the file)")
        p.add_argument("--rejects", type=Path, help="also write the invalid lines' line, column and reason to this CSV")
        p.add_argument("--json", action="store_true", help="print the summary as JSON")
        p.set_defaults(func=import_csv, kind=kind)


def import_csv(args) -> int:
    """Exit 0 when imported, 1 naming every invalid line (nothing written) or why the file cannot be read."""
    from api.cli import _migrated_engine
    from api.server import use_server_keys
    from commands.context import CommandContext
    from commands.csv_files import FileRefused
    from commands.etsy_import import KINDS, InvalidLines
    from commands.marketplace_facts import MarketplaceFacts, Pseudonyms
    from domain.errors import CommandRefused, DomainError
    from domain.meta import Actor, ActorKind
    from domain.shop import Shop

    try:
        data = args.path.read_bytes()  # before any database work: a wrong path fails at once
    except OSError as e:
        print(f"import failed: cannot read {args.path}: {e.strerror}", file=sys.stderr)
        return 1
    _, engine = _migrated_engine(pool_size=2)
    try:
        use_server_keys(engine, Settings.from_env(), log=lambda m: print(m, file=sys.stderr))
        shop = engine.core.repository.get(args.shop) if engine.core.recorder.select_events(args.shop, limit=1) else None
        if not isinstance(shop, Shop):
            print(f"import failed: no shop {args.shop}", file=sys.stderr)
            return 1
        ctx = CommandContext(actor=Actor(f"importer:{args.kind}", ActorKind.SERVICE), tenant_id=shop.tenant_id)
        importer = KINDS[args.kind](MarketplaceFacts(engine.core, engine.listings), ctx, args.shop, data,
                                    args.path.name, args.skip_invalid, Pseudonyms(engine.identity.secrets))
        with Progress("importing", unit="lines", lines_when_piped=True) as progress:
            importer.progress = progress.update
            summary = importer.run()
    except FileRefused as e:
        print(f"import failed, nothing written: {args.path.name}: {e.problem}", file=sys.stderr)
        return 1
    except InvalidLines as e:
        _write_rejects(args.rejects, e.summary.problems)
        print(f"import failed, nothing written: {e.summary.invalid} invalid line(s) in {args.path.name}"
              " (--skip-invalid imports the others):", file=sys.stderr)
        print("\n".join(f"  {p}" for p in e.summary.problems), file=sys.stderr)
        return 1
    except (DomainError, CommandRefused) as e:
        print(f"import failed: {e}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    _write_rejects(args.rejects, summary.problems)
    print(json.dumps(summary.as_dict(), indent=2) if args.json else "\n".join(summary.text()))
    return 0


def _write_rejects(path: Path | None, problems) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["line", "column", "reason"])
        writer.writerows([p.line, p.column or "", p.detail] for p in problems)


def add_feed_parser(sub) -> None:
    """`etsypro feed`: the competitor price feed worker."""
    import os

    from api.cli import _bootstrap, _count

    f = sub.add_parser("feed", help="consume a Kafka topic of competitor prices (JSON records) into observations")
    f.add_argument("--bootstrap-servers", type=_bootstrap, default=os.environ.get("ETSYPRO_KAFKA_BOOTSTRAP"),
                   required=not os.environ.get("ETSYPRO_KAFKA_BOOTSTRAP"),
                   help="Kafka bootstrap servers host:port[,...] (default $ETSYPRO_KAFKA_BOOTSTRAP)")
    f.add_argument("--topic", default="feeds.competitor-prices", help="the feed's topic (default feeds.competitor-prices)")
    f.add_argument("--group", default="etsypro-competitor-feed", help="consumer group: workers of one group share it")
    f.add_argument("--batch", type=_count, default=5000, help="records per command at most (default 5000)")
    f.add_argument("--once", action="store_true", help="stop after 5 s with nothing new")
    f.set_defaults(func=feed)


def feed(args) -> int:
    import asyncio
    import signal

    from api.cli import _migrated_engine, _without_broker
    from commands.competitor_feed import FeedIntake, FeedRecord
    from commands.marketplace_facts import MarketplaceFacts
    from streams.competitor_feed import FeedConfig, FeedWorker

    if (refused := _without_broker("feed", args.bootstrap_servers)) is not None:
        return refused
    _, engine = _migrated_engine(pool_size=2)
    intake = FeedIntake(MarketplaceFacts(engine.core, engine.listings))
    worker = FeedWorker(FeedConfig(args.bootstrap_servers, args.topic, args.group, args.batch), intake.take,
                        lambda m: FeedRecord(m.topic, m.partition, m.offset, m.value))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run(idle_stop_s=5.0 if args.once else None)

    try:
        asyncio.run(run())
    finally:
        engine.close()
    total = sum(r.recorded for r in worker.reports)
    refused = sum(len(r.rejected) for r in worker.reports)
    print(f"competitor feed {args.topic}: {total} observations recorded, {refused} records refused", file=sys.stderr)
    return 0
