"""Signed chain-head checkpoints on the command line and on serve's schedule (read/checkpoints.py):
`etsypro audit keygen FILE`, `etsypro audit checkpoint [--out DIR]`, `etsypro audit verify
--against CHECKPOINT --public-key FILE`; with ETSYPRO_CHECKPOINT_KEY set, `serve` writes one into
ETSYPRO_CHECKPOINT_DIR every ETSYPRO_CHECKPOINT_MINUTES. Ship that directory off the host (object
storage with retention, a mail to the auditor): a checkpoint only helps where the database's
owner cannot rewrite it."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path

import psycopg

from api.settings import Settings
from read.checkpoints import BadCheckpoint, check_anchor, key_id, new_key, opened, private_key, public_key, sign

log = logging.getLogger(__name__)


def write_private(path: Path, pem: bytes) -> None:
    """Created readable by its owner only, never over an existing key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def publish(conninfo: str, key_path: Path, out_dir: Path | None = None) -> tuple[dict, Path | None]:
    """Sign the chain's head now; written into out_dir (one file per checkpoint) when given."""
    key = private_key(key_path.read_bytes())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        document = sign(conn, key)
    if out_dir is None:
        return document, None
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = document["checkpoint"]
    stamp = checkpoint["at"].replace(":", "").replace("+0000", "Z")
    path = out_dir / f"checkpoint-{checkpoint['position']:012d}-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return document, path


class Publisher:
    """serve's scheduled checkpoints: one at start, then every `every_s` seconds (an InBackground
    follower: run(stop), close())."""

    def __init__(self, conninfo: str, key_path: Path, out_dir: Path, every_s: float):
        private_key(key_path.read_bytes())  # a bad key stops serve at start, not an hour later
        self.conninfo, self.key_path, self.out_dir, self.every_s = conninfo, key_path, out_dir, every_s

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                document, path = publish(self.conninfo, self.key_path, self.out_dir)
                log.info("chain checkpoint published", extra={"position": document["checkpoint"]["position"],
                                                               "file": str(path)})
            except (OSError, psycopg.Error) as e:
                log.error("chain checkpoint not published: %s", e)
            stop.wait(self.every_s)

    def close(self) -> None:
        pass


def scheduled(settings: Settings, conninfo: str) -> Publisher | None:
    if settings.checkpoint_key is None:
        return None
    return Publisher(conninfo, settings.checkpoint_key, settings.checkpoint_dir or settings.data_dir / "checkpoints",
                     settings.checkpoint_minutes * 60)


# -- the command line ---------------------------------------------------------------------------
def keygen(args) -> int:
    private, public = new_key()
    path = Path(args.file)
    try:
        write_private(path, private)
    except FileExistsError:
        print(f"{path} exists: not overwriting a key", file=sys.stderr)
        return 2
    path.with_name(path.name + ".pub").write_bytes(public)
    print(f"key {key_id(public_key(public))}: private {path} (keep it off the database host's backups),"
          f" public {path}.pub (give it to auditors)")
    return 0


def checkpoint(args) -> int:
    from api.server import database_url

    settings = Settings.from_env()
    key = Path(args.key) if args.key else settings.checkpoint_key
    if key is None:
        print("no signing key: give --key FILE or set ETSYPRO_CHECKPOINT_KEY", file=sys.stderr)
        return 2
    document, path = publish(database_url(settings, log=lambda m: print(m, file=sys.stderr)), key,
                             Path(args.out) if args.out else None)
    print(json.dumps(document, indent=2))
    if path:
        print(f"written to {path}", file=sys.stderr)
    return 0


def anchored(args, conninfo: str) -> int | None:
    """`audit verify --against`: exit status 1 or 2 when the checkpoint does not hold (or cannot be
    read); None when it holds, and the whole chain is verified next."""
    if not args.public_key:
        print("--against needs --public-key: the signer's public key, kept apart from the database", file=sys.stderr)
        return 2
    try:
        key = public_key(Path(args.public_key).read_bytes())
        checkpoint = opened(Path(args.against).read_text(), key)
    except (OSError, BadCheckpoint) as e:
        print(f"cannot check against the checkpoint: {e}", file=sys.stderr)
        return 2
    with psycopg.connect(conninfo, autocommit=True) as conn:
        report = check_anchor(conn, checkpoint)
    if not report.ok:
        print(f"TAMPERED: {report.problem}", file=sys.stderr)
        return 1
    print(f"anchored: the chain still holds the head signed {checkpoint.at} at position {checkpoint.position}")
    return None


def add_parsers(audits, verify) -> None:
    verify.add_argument("--against", metavar="CHECKPOINT", help="a signed checkpoint file: also catch truncation and re-chaining")
    verify.add_argument("--public-key", metavar="FILE", help="the checkpoint signer's public key (with --against)")
    k = audits.add_parser("keygen", help="create an Ed25519 key pair for signing chain checkpoints")
    k.add_argument("file", help="the private key's file (the public key goes to FILE.pub)")
    k.set_defaults(func=keygen)
    c = audits.add_parser("checkpoint", help="sign the chain's head now (print it, and write it into --out)")
    c.add_argument("--key", help="the private key file (default ETSYPRO_CHECKPOINT_KEY)")
    c.add_argument("--out", help="a directory to write the checkpoint file into")
    c.set_defaults(func=checkpoint)
