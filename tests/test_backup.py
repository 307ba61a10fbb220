"""The backup and restore drill (issue 16 item 4): `etsypro backup` of a trading shop's database,
`etsypro restore` into a fresh one; there `audit verify` passes, the projections rebuild equal to
the source's, idempotency keys recorded before the backup replay their answers and new commands
work. A corrupt, foreign, truncated or newer file and a non-empty target are refused, changing nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

import codec
import migrations
from api.app import create_app
from api.backup import (END, MAGIC, PROJECTION_TABLES, TRAILER, BackupRefused, backup, read_manifest, restore,
                        restore_tables, restored_tables, unclassified)
from api.database import create_database, drop_database
from api.server import running
from commands.engine import PricingEngine
from projections.projector import Projector
from tests.conftest import Accounts, verify_chain

ROOT = Path(__file__).resolve().parents[1]
DAY = datetime(2026, 11, 2, tzinfo=timezone.utc)


def etsypro(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ETSYPRO_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def rows(url: str, table: str) -> list[tuple]:
    """Every row of a table, in a total order (all columns), as text: comparable across databases."""
    with psycopg.connect(url) as conn:
        columns = [c.name for c in conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(
            sql.Identifier(*table.split(".")))).description]
        order = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
        return conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            order, sql.Identifier(*table.split(".")), order)).fetchall()


@pytest.fixture(scope="module")
def empty_database(pg_admin_url):
    """Factory: a database with no tables at all (not migrated); dropped after the module."""
    made = []

    def make() -> str:
        made.append(f"etsypro_test_{uuid.uuid4().hex[:12]}")
        return create_database(pg_admin_url, made[-1])

    yield make
    for name in made:
        drop_database(pg_admin_url, name)


def user_tables(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN"
                            " ('pg_catalog', 'information_schema')").fetchone()[0]


def trade(client: httpx.Client, service: dict, key: dict) -> tuple[str, list[str], httpx.Response]:
    """A seller's shop with listings, observations and sales (every projection has rows), and a price
    change by the tenant's service key under an idempotency key."""
    shop = client.post("/shops", json={"name": "Drill Pottery", "currency": "GBP"}).json()["shop_id"]
    listings = [x["listing_id"] for x in client.post(f"/shops/{shop}/listings", json={"listings": [
        {"external_id": f"e{i}", "sku": f"S{i}", "title": f"Jug {i}", "price": "20.00", "currency": "GBP",
         "floor": "10.00", "ceiling": "60.00", "cost": "5.00"} for i in range(3)]}).json()["listings"]]
    changed = client.put(f"/shops/{shop}/listings/{listings[0]}/price", headers={**service, **key},
                         json={"price": "24.50", "currency": "GBP", "reason": "before the backup"})
    assert changed.status_code == 200, changed.text
    observations = [{"listing_id": listings[i % 2], "competitor": f"rival-{i % 3}", "price": f"{18 + i * 0.25:.2f}",
                     "currency": "GBP", "observed_at": (DAY + timedelta(minutes=47 * i)).isoformat()} for i in range(30)]
    assert client.post(f"/shops/{shop}/observations", json={"observations": observations}).status_code == 201
    sales = [{"listing_id": listings[i % 3], "quantity": 1 + i % 2, "unit_price": "24.50", "currency": "GBP",
              "order_id": f"o{i}", "transaction_id": f"t{i}", "sold_at": (DAY + timedelta(hours=5 * i)).isoformat()}
             for i in range(8)]
    assert client.post(f"/shops/{shop}/sales", json={"sales": sales}).status_code == 201
    return shop, listings, changed


@pytest.fixture(scope="module")
def drill(new_database, empty_database, tmp_path_factory):
    """A source database that traded, its backup by the CLI, and its restore by the CLI into an empty database."""
    source = new_database()
    engine = PricingEngine(source, pool_size=2)
    seller = Accounts(engine).new("seller")
    service = Accounts(engine).new("service", seller.tenant_id)
    key = {"Idempotency-Key": f"drill-{uuid.uuid4().hex}"}
    with running(create_app(engine)) as url, httpx.Client(base_url=url, headers=seller, timeout=60) as client:
        shop, listings, changed = trade(client, service, key)
    Projector(source, codec.to_domain_event).catch_up()
    file = tmp_path_factory.mktemp("backup") / "drill.etsypro-backup"
    backed_up = etsypro(source, "backup", str(file))
    assert backed_up.returncode == 0, backed_up.stderr
    target = empty_database()
    restored = etsypro(target, "restore", str(file))
    yield {"source": source, "target": target, "file": file, "engine": engine, "service": service, "key": key,
           "shop": shop, "listings": listings, "changed": changed, "backed_up": backed_up, "restored": restored}
    engine.close()


def test_restore_says_the_chain_verifies_with_the_backups_head(drill):
    assert drill["restored"].returncode == 0, drill["restored"].stderr
    manifest = read_manifest(open(drill["file"], "rb"))
    assert f"audit verify: ok, {manifest['chain_head']['events']:,} events, head {manifest['chain_head']['hash']}" \
        in drill["restored"].stdout
    assert manifest["chain_head"]["hash"] in drill["backed_up"].stdout


def test_restored_tables_and_rebuilt_projections_equal_the_sources(drill):
    for table in restored_tables() + list(PROJECTION_TABLES):
        assert rows(drill["target"], table) == rows(drill["source"], table), table
    assert rows(drill["source"], "analytics.price_changes") and rows(drill["source"], "analytics.sales")


def test_on_the_restored_database_keys_replay_and_commands_continue(drill):
    target, source = drill["target"], drill["source"]
    restored = PricingEngine(target, pool_size=2)
    restored.identity.secrets = drill["engine"].identity.secrets  # the same ETSYPRO_SECRET_KEY
    shop, listing = drill["shop"], drill["listings"][0]
    try:
        with running(create_app(restored)) as url, \
                httpx.Client(base_url=url, headers=drill["service"], timeout=60) as client:
            replayed = client.put(f"/shops/{shop}/listings/{listing}/price", headers=drill["key"],
                                  json={"price": "24.50", "currency": "GBP", "reason": "before the backup"})
            assert replayed.headers.get("Idempotent-Replayed") == "true"
            assert replayed.json() == drill["changed"].json()
            after = client.put(f"/shops/{shop}/listings/{listing}/price",
                               json={"price": "26.00", "currency": "GBP", "reason": "after the restore"})
            assert after.status_code == 200, after.text
            assert client.get(f"/shops/{shop}/listings/{listing}").json()["price"] == "26.00"
        report = verify_chain(restored)
        assert report.ok, report
        with psycopg.connect(source) as a, psycopg.connect(target) as b:
            last_source = a.execute("SELECT max(notification_id) FROM pricing_events").fetchone()[0]
            newest = b.execute("SELECT min(notification_id) FROM pricing_events e WHERE e.notification_id >"
                               " %s", [last_source]).fetchone()[0]
        assert newest is not None and report.last_position >= newest
    finally:
        restored.close()


def rewritten(file: Path, tmp: Path, change) -> Path:
    """A copy of the backup whose manifest `change` edited (a consistent trailer around it)."""
    data = file.read_bytes()
    offset, length = TRAILER.unpack(data[-TRAILER.size - len(END):-len(END)])
    manifest = json.loads(data[offset:offset + length])
    change(manifest)
    body = json.dumps(manifest).encode()
    out = tmp / f"edited-{uuid.uuid4().hex[:6]}"
    out.write_bytes(data[:offset] + body + TRAILER.pack(offset, len(body)) + END)
    return out


def flipped(file: Path, tmp: Path) -> Path:
    """One byte of the event store's rows changed."""
    data = bytearray(file.read_bytes())
    section = next(s for s in read_manifest(open(file, "rb"))["tables"] if s["table"] == "public.pricing_events")
    data[section["offset"] + section["length"] // 2] ^= 0x01
    out = tmp / "flipped"
    out.write_bytes(bytes(data))
    return out


def newer(manifest: dict) -> None:
    manifest["schema"]["migrations"].append([9999, "from_the_future", "0" * 64])
    manifest["schema"]["version"] = 9999


BAD_FILES = [
    ("foreign", lambda f, tmp: _write(tmp / "dump", b"PGDMP\x01\x0e\x00" + os.urandom(200)), "not an EtsyPro backup"),
    ("empty", lambda f, tmp: _write(tmp / "nothing", b""), "not an EtsyPro backup"),
    ("newer format", lambda f, tmp: _write(tmp / "format", MAGIC + b"\x00\x00\x00\x09" + f.read_bytes()[len(MAGIC) + 4:]),
     "backup format 9 is newer"),
    ("truncated", lambda f, tmp: _write(tmp / "cut", f.read_bytes()[:-40]), "corrupt backup"),
    ("altered rows", flipped, "corrupt backup: the rows of public.pricing_events do not match their checksum"),
    ("newer schema", lambda f, tmp: rewritten(f, tmp, newer), "the backup's schema is newer (migration 9999_from_the_future)"),
    ("miscounted", lambda f, tmp: rewritten(f, tmp, lambda m: m["tables"][0].update(rows=m["tables"][0]["rows"] + 1)),
     "do not match their checksum"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, says", [pytest.param(m, s, id=i) for i, m, s in BAD_FILES])
def test_a_bad_file_is_refused_and_the_target_stays_empty(drill, empty_database, tmp_path, make, says):
    target = empty_database()
    with pytest.raises(BackupRefused, match=_literal(says)):
        restore_tables(target, make(drill["file"], tmp_path))
    assert user_tables(target) == 0


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_a_target_with_data_is_refused_by_the_cli_and_keeps_its_data(drill):
    before = rows(drill["target"], "public.pricing_events")
    refused = etsypro(drill["target"], "restore", str(drill["file"]))
    assert refused.returncode == 1
    assert "refused: the target database is not empty: public.pricing_events has rows" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert rows(drill["target"], "public.pricing_events") == before


def test_a_target_at_another_schema_is_refused(drill, empty_database):
    target = empty_database()
    migrations.apply(target, log=lambda *_: None, up_to=200)
    with pytest.raises(BackupRefused, match="the target database is migrated to 200"):
        restore_tables(target, drill["file"])


def test_a_freshly_migrated_target_is_accepted(drill, new_database):
    target = new_database()
    restore_tables(target, drill["file"])
    assert rows(target, "public.command_log") == rows(drill["source"], "public.command_log")


def test_every_table_of_the_schema_has_a_backup_decision(drill):
    with psycopg.connect(drill["source"]) as conn:
        assert unclassified(conn) == [], "decide in api/backup.py TABLES: restored, rebuilt or reset"


def test_a_backup_of_an_older_schema_restores_and_is_migrated_to_this_releases(empty_database, tmp_path):
    source, target = empty_database(), empty_database()
    migrations.apply(source, log=lambda *_: None, up_to=700)
    manifest = backup(source, tmp_path / "old")
    assert manifest["schema"]["version"] == 700
    assert "public.experiments" not in [s["table"] for s in manifest["tables"]]  # a later migration's table
    done = restore(target, tmp_path / "old")
    assert done.verified.ok and done.migrated and done.migrated[-1].startswith(f"{migrations.available()[-1].version:04d}")
    with psycopg.connect(target) as conn:
        versions = [v for v, in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in migrations.available()]
