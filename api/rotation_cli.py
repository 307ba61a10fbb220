"""`etsypro rotate-secret`: re-seal what the previous server key encrypted (commands/rotation.py).

Run it after every server and worker runs with ETSYPRO_SECRET_KEY=<new> and
ETSYPRO_SECRET_KEY_PREVIOUS=<old> (docs/operations.md, "Rotating the server key").
"""

from __future__ import annotations

import sys

import psycopg

from api.progress import Progress
from api.settings import Settings

REFUSED = 2


def rotate_secret(args) -> int:
    import migrations
    from api.server import database_url, previous_secret_key
    from commands.credentials import Secrets
    from commands.rotation import RotationRefused, check_keys, rotate

    settings = Settings.from_env()
    try:
        if not settings.secret_key:  # never the development key file: a rotation names both keys
            raise ValueError("ETSYPRO_SECRET_KEY is not set: set it to the new key")
        secrets = Secrets(settings.secret_key, previous_secret_key(settings))
        check_keys(secrets)
    except (ValueError, RotationRefused) as refused:
        print(f"etsypro rotate-secret: {refused}", file=sys.stderr)
        return REFUSED
    url = database_url(settings, log=lambda m: print(m, file=sys.stderr))
    migrations.apply(url, log=lambda *_: None)
    bars: dict[str, Progress] = {}

    def progress(column: str, done: int, total: int) -> None:
        bar = bars.get(column) or bars.setdefault(column, Progress(column, total, "rows", lines_when_piped=True))
        bar.update(done, total)

    try:
        with psycopg.connect(url) as conn:
            rotation = rotate(conn, secrets, args.batch, progress, dry_run=args.check)
    except RotationRefused as refused:
        print(f"etsypro rotate-secret: {refused}", file=sys.stderr)
        return REFUSED
    finally:
        for bar in bars.values():
            bar.close()
    verb = "to re-seal" if args.check else "re-sealed"
    for name, tally in rotation.columns.items():
        print(f"{name}: {tally.resealed:,} {verb}, {tally.current:,} already under the current key")
    if args.check:
        return 1 if rotation.resealed else 0
    print("digests (refresh tokens, API keys, recovery codes, resets) still match under the previous key"
          " until ETSYPRO_SECRET_KEY_PREVIOUS is dropped: see docs/operations.md", file=sys.stderr)
    return 0


def _batch(text: str) -> int:
    import argparse

    if not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError("a batch is a whole number of rows from 1 to 100000")
    return int(text)


def add_parsers(sub) -> None:
    """`etsypro rotate-secret` (api/cli.py registers it)."""
    r = sub.add_parser("rotate-secret", help="re-encrypt TOTP secrets and marketplace tokens sealed under"
                                             " ETSYPRO_SECRET_KEY_PREVIOUS with ETSYPRO_SECRET_KEY (resumable: run again)")
    r.add_argument("--batch", type=_batch, default=500, help="rows per transaction (default 500)")
    r.add_argument("--check", action="store_true", help="change nothing; count what is still under the previous key"
                                                        " (exit 1 if anything is)")
    r.set_defaults(func=rotate_secret)
