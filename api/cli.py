"""`etsypro` command line. Each subcommand is a function registered in COMMANDS below."""

from __future__ import annotations

import argparse
import sys

from api.settings import Settings


def serve(args) -> int:
    import uvicorn

    from api.server import build

    settings = Settings.from_env()
    _, app = build(settings)
    uvicorn.run(app, host=args.host or settings.host, port=args.port or settings.port, log_level="info")
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="etsypro", description="EtsyPro Pricing engine")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP API (embedded PostgreSQL unless ETSYPRO_DATABASE_URL is set)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(func=serve)

    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(func=migrate)
    sub.add_parser("demo", help="create a demo shop through the real API and print what happened").set_defaults(func=demo)
    # Further subcommands register here: one add_parser + set_defaults each.
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
