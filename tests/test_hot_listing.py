"""A hot listing: many clients changing one listing at once, none naming `expected_version`.

Within a process its writers take turns (commands/serial.py), so none loses a race to another
writer of the same process: every change lands, in order, and no client gets 409. Across
processes (two engines on one database stand for two worker processes) lost races are retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest
from eventsourcing.persistence import IntegrityError

from api.app import create_app
from api.server import HAND_OVER, free_port, running
from commands.engine import PricingEngine
from commands.serial import WriterBusy, WriterLocks
from conftest import ROOT, Accounts, listing_spec, price_changes, send_together

CLIENTS = 16
ROUNDS = 3  # each client sends its changes one after the other, so new first tries meet retries
SUSTAINED = 12  # rounds through real worker processes: long enough that racing writers ran out of tries


def changes_by(clients: int, rounds: int) -> list[list[str]]:
    """Distinct prices within the listing's 10.00-40.00 guardrails: client i's changes, in order."""
    return [[f"{11 + (i * rounds + r) * 28 / (clients * rounds):.2f}" for r in range(rounds)] for i in range(clients)]


def put_prices(base_urls: list[str], tenant, shop: str, listing: str, prices: list[list[str]]) -> list[list[httpx.Response]]:
    def client(i: int) -> list[httpx.Response]:
        with httpx.Client(base_url=base_urls[i % len(base_urls)], headers=tenant, timeout=60) as http:
            return [http.put(f"/shops/{shop}/listings/{listing}/price", json={"price": p, "currency": "GBP"})
                    for p in prices[i]]

    return send_together(len(prices), client)


def assert_every_change_landed(engine, listing: str, answers: list[list[httpx.Response]], prices: list[list[str]]):
    sent = sum(map(len, prices))
    statuses = Counter(a.status_code for client in answers for a in client)
    assert statuses == {200: sent}, [a.text for client in answers for a in client if a.status_code != 200][:3]
    versions = sorted(a.json()["version"] for client in answers for a in client)
    assert versions == list(range(2, 2 + sent))  # contiguous, none shared
    changes = price_changes(engine, listing)
    assert sorted(str(c.price.amount) for c in changes) == sorted(p for client in prices for p in client)
    for earlier, later in zip(changes, changes[1:]):
        assert later.previous == earlier.price  # each decided on the state just before it


@pytest.fixture
def lost_races(engine, monkeypatch) -> list:
    """The saves of the session's engine that lost at the event store's key (another writer's event took the version)."""
    lost, insert = [], engine.core.recorder.insert_events

    def counting(stored_events, **kwargs):
        try:
            return insert(stored_events, **kwargs)
        except IntegrityError:
            lost.append(stored_events[0].originator_id)
            raise

    monkeypatch.setattr(engine.core.recorder, "insert_events", counting)
    return lost


def test_writers_of_one_listing_in_one_process_take_turns(base_url, tenant, shop, listing, engine, lost_races):
    prices = changes_by(CLIENTS, ROUNDS)
    answers = put_prices([base_url], tenant, shop, listing, prices)

    assert_every_change_landed(engine, listing, answers, prices)
    assert lost_races == []  # no retry was spent on a race within the process


def test_writers_of_one_listing_in_two_processes_all_land(base_url, tenant, shop, listing, engine, database_url):
    other = PricingEngine(database_url, pool_size=2)  # another worker process's engine
    other.identity.secrets = engine.identity.secrets  # the same configured key, as every worker has
    try:
        with running(create_app(other)) as other_url:
            prices = changes_by(CLIENTS, ROUNDS)
            answers = put_prices([base_url, other_url], tenant, shop, listing, prices)
    finally:
        other.close()
    assert_every_change_landed(engine, listing, answers, prices)


@pytest.mark.skipif(not HAND_OVER, reason="serve --workers hands connections over on Unix only")
def test_writers_of_one_listing_through_two_worker_processes_all_land(new_database, tmp_path):
    url, port, key = new_database(), free_port(), "k" * 40
    engine = PricingEngine(url, pool_size=1)
    engine.identity.use_secret_key(key)  # the server's: tokens issued here are valid there
    seller, log = Accounts(engine).new("seller"), tmp_path / "serve.log"
    env = {**os.environ, "ETSYPRO_DATABASE_URL": url, "ETSYPRO_SECRET_KEY": key}
    server = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "2"],
                              cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        shop, listing = shop_with_listing(base, seller, log)
        prices = changes_by(CLIENTS, SUSTAINED)
        answers = put_prices([base], seller, shop, listing, prices)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    assert_every_change_landed(engine, listing, answers, prices)
    engine.close()


def shop_with_listing(base: str, seller, log) -> tuple[str, str]:
    deadline = time.monotonic() + 60
    while True:
        try:
            shop = httpx.post(f"{base}/shops", headers=seller, json={"name": "Hot", "currency": "GBP"}).json()["shop_id"]
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    registered = httpx.post(f"{base}/shops/{shop}/listings", headers=seller, json={"listings": [listing_spec()]})
    return shop, registered.json()["listings"][0]["listing_id"]


def test_bulk_changes_naming_listings_in_opposite_orders_all_land(base_url, tenant, shop, engine):
    ids = [x["listing_id"] for x in httpx.post(f"{base_url}/shops/{shop}/listings", headers=tenant, json={
        "listings": [listing_spec(i) for i in range(2)]}).json()["listings"]]

    def bulk(i: int) -> httpx.Response:
        order = ids if i % 2 else ids[::-1]
        return httpx.post(f"{base_url}/shops/{shop}/price-changes", headers=tenant, timeout=60, json={
            # 21.00 up: never the listings' 20.00, so every change writes an event
            "currency": "GBP", "changes": [{"listing_id": x, "price": f"{21 + i}.00"} for x in order]})

    answers = send_together(12, bulk)
    assert [a.status_code for a in answers] == [200] * 12, [a.text for a in answers]
    for x in ids:
        assert [c.originator_version for c in price_changes(engine, x)] == list(range(2, 14))


def test_stripes_are_taken_in_ascending_order_whatever_order_a_command_names_them():
    locks = WriterLocks(stripes=8, wait_seconds=5)
    low, high = uuid.UUID(int=1), uuid.UUID(int=6)  # stripes 1 and 6
    done = []

    def writer(first, then) -> None:
        for _ in range(2000):
            with locks.hold([first]) as hold:
                hold.extend([then])
        done.append(True)

    threads = [threading.Thread(target=writer, args=pair) for pair in ((low, high), (high, low))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert done == [True, True]  # neither waited for the other in a cycle (that would be WriterBusy)


def test_a_stripe_held_too_long_is_writer_busy_and_memory_stays_flat():
    locks = WriterLocks(stripes=4, wait_seconds=0.05)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with locks.hold([uuid.UUID(int=2)]):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    with pytest.raises(WriterBusy):
        locks.hold([uuid.UUID(int=6)])  # the same stripe
    release.set()
    thread.join()
    for n in range(10_000):
        with locks.hold([uuid.uuid4()]):
            pass
    assert len(locks._locks) == 4
