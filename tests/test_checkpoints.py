"""Anchored chain heads (issue 16 item 7): cutting the newest events off with their links, or
editing an event and re-chaining everything after it, leaves a chain that `audit verify` passes;
a signed checkpoint kept from before catches both. A forged or altered checkpoint, or one signed
by another key, is refused; serve's publisher writes checkpoints on its schedule."""

from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest

from api.checkpoints import Publisher, publish
from api.cli import main as etsypro
from commands import models
from commands.context import CommandContext
from commands.engine import PricingEngine
from conftest import listing_spec, verify_chain
from domain.meta import Actor
from read.audit import event_digest, link_hash
from read.checkpoints import BadCheckpoint, check_anchor, new_key, opened, public_key


@pytest.fixture
def world(new_database, tmp_path, monkeypatch):
    """A database of its own with a few hundred events in many links, and a key pair on disk."""
    url = new_database()
    engine = PricingEngine(url, pool_size=1)
    ctx = CommandContext(actor=Actor("pytest"), tenant_id=f"t-{uuid.uuid4().hex[:8]}")
    shop = uuid.UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Anchored", currency="GBP")).body["shop_id"])
    listings = engine.listings.register_listings(ctx, shop, models.RegisterListings(listings=[listing_spec(n) for n in range(5)]))
    for i in range(20):
        listing = uuid.UUID(listings.body["listings"][i % 5]["listing_id"])
        engine.listings.set_price(ctx, shop, listing, models.SetPrice(price=f"{21 + i % 2}.00", currency="GBP"))
    engine.close()
    private, public = new_key()
    (tmp_path / "key").write_bytes(private)
    (tmp_path / "key.pub").write_bytes(public)
    monkeypatch.setenv("ETSYPRO_DATABASE_URL", url)
    return url, tmp_path


def checkpoint_now(url: str, tmp_path) -> str:
    document, path = publish(url, tmp_path / "key", tmp_path / "kept")
    return str(path)


def verify_against(path: str, tmp_path) -> int:
    return etsypro(["audit", "verify", "--against", path, "--public-key", str(tmp_path / "key.pub")])


def links(conn) -> list[tuple]:
    return conn.execute("SELECT first_id, last_id, digests, hash FROM event_chain_links ORDER BY first_id").fetchall()


def behind_the_triggers(url: str):
    """A superuser's session with the append-only triggers off: what the attacker holds."""
    conn = psycopg.connect(url)
    conn.execute("SET session_replication_role = replica")
    return conn


def test_a_checkpoint_holds_while_the_log_only_grows(world, capsys):
    url, tmp_path = world
    kept = checkpoint_now(url, tmp_path)
    engine = _engine(url)
    try:  # more statements after the checkpoint: new links, the signed one untouched
        ctx = CommandContext(actor=Actor("pytest"), tenant_id="later")
        for n in range(3):
            engine.listings.open_shop(ctx, models.OpenShop(name=f"Later {n}", currency="GBP"))
    finally:
        engine.close()
    assert verify_against(kept, tmp_path) == 0
    assert "anchored" in capsys.readouterr().out


def truncate(conn) -> None:
    """The last three statements' events go, with their index rows and links."""
    cut = links(conn)[-3][0]
    conn.execute("DELETE FROM pricing_events WHERE notification_id >= %s", [cut])
    conn.execute("DELETE FROM event_index WHERE notification_id >= %s", [cut])
    conn.execute("DELETE FROM event_chain_links WHERE first_id >= %s", [cut])


def edit_and_rechain(conn) -> None:
    """The third statement's price becomes 99.00; its link and every later one are recomputed."""
    chain = links(conn)
    first, last = chain[2][0], chain[2][1]
    edited = conn.execute("UPDATE pricing_events SET state = convert_to(replace(convert_from(state, 'UTF8'), '21.00',"
                          " '99.00'), 'UTF8') WHERE notification_id BETWEEN %s AND %s", [first, last]).rowcount
    assert edited >= 1
    rechain(conn, chain, 2)


@pytest.mark.parametrize("tamper, caught", [(truncate, "TAMPERED: truncated: the chain ends at position"),
                                            (edit_and_rechain, "TAMPERED: re-chained: the hash at position")])
def test_tampering_the_chain_cannot_see_is_caught_against_a_kept_checkpoint(world, capsys, tamper, caught):
    url, tmp_path = world
    kept = checkpoint_now(url, tmp_path)
    with behind_the_triggers(url) as conn:
        tamper(conn)
    assert _verified(url).ok  # the chain alone sees nothing: a shorter, or a different, valid chain
    capsys.readouterr()
    assert verify_against(kept, tmp_path) == 1
    assert caught in capsys.readouterr().err


def rechain(conn, chain: list[tuple], edited: int) -> None:
    """Recompute the edited link's digests and every hash from it to the head, as the trigger would."""
    previous = bytes(chain[edited - 1][3])
    for first, last, digests, _ in chain[edited:]:
        if first == chain[edited][0]:
            rows = conn.execute("SELECT notification_id, originator_id, originator_version, topic, state FROM pricing_events"
                                " WHERE notification_id BETWEEN %s AND %s ORDER BY notification_id", [first, last]).fetchall()
            digests = b"".join(event_digest(*row) for row in rows)
        previous = link_hash(previous, bytes(digests))
        conn.execute("UPDATE event_chain_links SET digests = %s, hash = %s WHERE first_id = %s", [digests, previous, first])


def test_forged_altered_or_foreign_checkpoints_are_refused(world, capsys):
    url, tmp_path = world
    kept = json.loads((tmp_path / "kept" / checkpoint_now(url, tmp_path).split("/")[-1]).read_text())
    key = public_key((tmp_path / "key.pub").read_bytes())
    assert opened(kept, key).position > 0
    moved = {**kept, "checkpoint": {**kept["checkpoint"], "position": kept["checkpoint"]["position"] - 1}}
    with pytest.raises(BadCheckpoint, match="altered or forged"):
        opened(moved, key)
    with pytest.raises(BadCheckpoint, match="not by the given key"):
        opened(kept, public_key(new_key()[1]))
    for junk in ("", "{}", '{"format": "etsypro-chain-checkpoint/1"}', "[1]", json.dumps({**kept, "signature": "%%%"})):
        with pytest.raises(BadCheckpoint):
            opened(junk, key)
    (tmp_path / "forged.json").write_text(json.dumps(moved))
    assert verify_against(str(tmp_path / "forged.json"), tmp_path) == 2
    assert "altered or forged" in capsys.readouterr().err
    assert etsypro(["audit", "verify", "--against", str(tmp_path / "forged.json")]) == 2  # no public key given


def test_serve_publishes_on_its_schedule(world):
    url, tmp_path = world
    stop = threading.Event()
    publisher = Publisher(url, tmp_path / "key", tmp_path / "scheduled", every_s=0.1)
    thread = threading.Thread(target=publisher.run, args=(stop,))
    thread.start()
    try:
        stop.wait(0.5)
    finally:
        stop.set()
        thread.join(10)
    written = sorted((tmp_path / "scheduled").glob("checkpoint-*.json"))
    assert len(written) >= 2
    with psycopg.connect(url) as conn:
        assert check_anchor(conn, opened(written[-1].read_text(), public_key((tmp_path / "key.pub").read_bytes()))).ok


def _engine(url: str) -> PricingEngine:
    return PricingEngine(url, pool_size=1)


def _verified(url: str):
    engine = _engine(url)
    try:
        return verify_chain(engine)
    finally:
        engine.close()
