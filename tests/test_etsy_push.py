"""Prices out to (the fake) Etsy over real HTTP: GET-transform-PUT keeps variations, outcomes are
events, superseded changes are skipped, bad answers are clear failures, 429 storms are backed off
within the budget, and kill -9 of the pusher at random points loses and doubles nothing."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from decimal import Decimal

import httpx
import psycopg
import pytest

from api.etsy import app_client
from api.server import build, running
from api.settings import Settings
from conftest import Accounts
from domain.marketplace import EtsyPush, push_id
from streams.etsy_client import SharedPace
from streams.etsy_push import EtsyPusher, PushQueue
from etsy_world import SECRET_KEY, client_of, connect, etsy_in_environment, etsy_shop_with_listings, etsypro, open_shop

pytest_plugins = ["etsy_world"]


@pytest.fixture
def world(etsy_api, etsy_engine, etsy_server, fake):
    """A connected shop whose Etsy listings (the second with 3 variations) are synced in."""
    shop = open_shop(etsy_api)
    etsy_shop, listings = etsy_shop_with_listings(fake, 2)
    listings.append(fake.add_listing(etsy_shop.shop_id, "Sized mug", "SIZED", Decimal("30.00"), variations=3))
    connect(etsy_api, fake, shop, etsy_shop)
    synced = etsy_api.post(f"/shops/{shop}/marketplace/etsy/sync")
    assert synced.status_code == 200 and synced.json()["registered"] == 3, synced.text
    links = linked(etsy_engine, shop)
    return {"shop": shop, "etsy_shop": etsy_shop, "listings": listings, "links": links}


def linked(engine, shop: str) -> dict[int, str]:
    with psycopg.connect(engine.core.conninfo) as conn:
        return {etsy: str(listing) for etsy, listing in conn.execute(
            "SELECT etsy_listing_id, listing_id FROM marketplace.etsy_listings WHERE shop_id = %s", [shop])}


def set_price(api, shop: str, listing: str, price: str) -> int:
    answer = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": price, "currency": "GBP"})
    assert answer.status_code == 200, answer.text
    return answer.json()["version"]


def pusher_of(engine, etsy_app, **budget) -> EtsyPusher:
    return EtsyPusher(engine.marketplace, client_of(etsy_app, **budget), engine.core.conninfo)


def drain(engine, etsy_app) -> EtsyPusher:
    PushQueue(engine.core.conninfo).catch_up()
    pusher = pusher_of(engine, etsy_app)
    try:
        pusher.step()
    finally:
        pusher.close()
    return pusher


def outcomes(engine, listing: str, version: int) -> list[str]:
    return [type(e).__name__ for e in engine.core.events.get(push_id(uuid.UUID(listing), version))]


def test_a_push_keeps_the_variations_and_is_recorded(world, etsy_api, etsy_engine, etsy_server, fake):
    sized = world["listings"][2]
    before = fake.get_inventory(world["etsy_shop"].user_id, sized.listing_id)[1]
    version = set_price(etsy_api, world["shop"], world["links"][sized.listing_id], "33.50")
    pusher = drain(etsy_engine, etsy_server[1])
    assert pusher.stats.pushed == 1
    after = fake.get_inventory(world["etsy_shop"].user_id, sized.listing_id)[1]
    assert fake.price_of(sized.listing_id) == Decimal("33.50")
    assert [p["property_values"] for p in after["products"]] == [p["property_values"] for p in before["products"]]
    assert [p["sku"] for p in after["products"]] == ["SIZED-0", "SIZED-1", "SIZED-2"]
    assert after["sku_on_property"] == before["sku_on_property"]
    assert outcomes(etsy_engine, world["links"][sized.listing_id], version) == ["Started", "Pushed"]
    assert etsy_api.get(f"/shops/{world['shop']}/marketplace/etsy/queue").json() == []


def test_a_superseded_change_is_skipped(world, etsy_api, etsy_engine, etsy_server, fake):
    etsy_id = world["listings"][0].listing_id
    listing = world["links"][etsy_id]
    first = set_price(etsy_api, world["shop"], listing, "21.00")
    last = set_price(etsy_api, world["shop"], listing, "22.00")
    calls = len(fake.calls)
    drain(etsy_engine, etsy_server[1])
    assert fake.price_of(etsy_id) == Decimal("22.00")
    assert len(fake.calls) - calls == 2  # one GET and one PUT: 21.00 never went out
    assert outcomes(etsy_engine, listing, first) == [] and outcomes(etsy_engine, listing, last) == ["Started", "Pushed"]


def test_a_push_of_an_older_change_in_flight_never_wins_over_a_newer_one(world, etsy_api, etsy_engine, etsy_server, fake):
    etsy_id = world["listings"][0].listing_id
    listing = world["links"][etsy_id]
    older = set_price(etsy_api, world["shop"], listing, "23.00")
    PushQueue(etsy_engine.core.conninfo).catch_up()
    pusher = pusher_of(etsy_engine, etsy_server[1])
    try:
        in_flight = [row for row in pusher.due() if str(row["listing_id"]) == listing]
        newer = set_price(etsy_api, world["shop"], listing, "24.50")  # accepted while the older one is on its way
        PushQueue(etsy_engine.core.conninfo).catch_up()
        assert pusher.push(in_flight[0]) == "pushed" and fake.price_of(etsy_id) == Decimal("23.00")
        queued = etsy_api.get(f"/shops/{world['shop']}/marketplace/etsy/queue").json()
        assert [q["version"] for q in queued] == [newer]  # recording the older push left the newer queued
        pusher.step()
    finally:
        pusher.close()
    assert fake.price_of(etsy_id) == Decimal("24.50")
    assert outcomes(etsy_engine, listing, older) == outcomes(etsy_engine, listing, newer) == ["Started", "Pushed"]


def test_an_answer_of_unexpected_shape_is_a_recorded_failure_and_nothing_is_half_written(world, etsy_api, etsy_engine,
                                                                                         etsy_server, fake):
    etsy_id = world["listings"][1].listing_id
    with fake.lock:
        fake.listings[etsy_id].inventory["products"][0]["offerings"][0]["price"] = "20.00"  # not a money object
    version = set_price(etsy_api, world["shop"], world["links"][etsy_id], "24.00")
    pusher = drain(etsy_engine, etsy_server[1])
    assert pusher.stats.failed == 1
    failed = list(etsy_engine.core.events.get(push_id(uuid.UUID(world["links"][etsy_id]), version)))[-1]
    assert isinstance(failed, EtsyPush.Failed) and "offerings[0].price" in failed.answer
    with fake.lock:
        assert fake.listings[etsy_id].inventory["products"][0]["offerings"][0]["price"] == "20.00"  # no PUT went out
    assert etsy_api.get(f"/shops/{world['shop']}/marketplace/etsy/queue").json() == []


def test_a_5xx_is_retried_later_and_recorded(world, etsy_api, etsy_engine, etsy_server, fake):
    etsy_id = world["listings"][0].listing_id
    version = set_price(etsy_api, world["shop"], world["links"][etsy_id], "25.00")
    fake.fail_next(1)
    pusher = drain(etsy_engine, etsy_server[1])
    assert pusher.stats.retrying == 1
    queued = etsy_api.get(f"/shops/{world['shop']}/marketplace/etsy/queue").json()
    assert [(q["version"], q["attempts"]) for q in queued] == [(version, 1)] and "503" in queued[0]["last_error"]
    assert outcomes(etsy_engine, world["links"][etsy_id], version) == ["Started", "Retrying"]


def test_a_429_storm_is_backed_off_and_no_call_goes_over_the_budget(world, etsy_engine, etsy_server, fake):
    client = client_of(etsy_server[1], backoff_base_s=0.02)
    token = etsy_engine.marketplace.grant(uuid.UUID(world["shop"])).access_token
    etsy_id = world["listings"][0].listing_id
    client.inventory(token, etsy_id)  # the headers tell the limit (the pace is 200 a second from here)
    since = time.time()
    fake.storm(4)
    assert client.inventory(token, etsy_id)["products"]
    tried = [at for at, *_ in fake.calls if at >= since]
    gaps = [b - a for a, b in zip(tried, tried[1:])]
    assert client.budget.throttled == 4 and len(tried) == 5
    assert gaps == sorted(gaps) and gaps[0] >= 0.02  # backed off longer after each 429 in a row
    over = lower_limit(fake, 15)
    try:
        started_at = time.time()
        for _ in range(45):
            client.inventory(token, etsy_id)
        assert fake.over_limit_calls() == over  # the headers' budget was never exceeded
        assert max(calls_per_second(fake, started_at).values()) <= 15
        assert time.time() - started_at > 2.5  # 45 calls paced at 97 % of 15 a second
    finally:
        fake.config.per_second = 200
        client.close()


def test_kill_9_of_the_pusher_at_random_points_leaves_etsy_at_the_engines_prices(etsy_api, etsy_engine, etsy_server,
                                                                               fake, database_url):
    shop = open_shop(etsy_api)
    etsy_shop, _ = etsy_shop_with_listings(fake, 8)
    connect(etsy_api, fake, shop, etsy_shop)
    assert etsy_api.post(f"/shops/{shop}/marketplace/etsy/sync").status_code == 200
    links = linked(etsy_engine, shop)
    rng = random.Random(14)
    worker = etsypro(database_url, etsy_server[1], "etsy", "push")
    kills = 0
    try:
        for i in range(60):
            set_price(etsy_api, shop, links[rng.choice(list(links))], f"{rng.randint(1500, 4000) / 100:.2f}")
            time.sleep(rng.uniform(0.0, 0.08))
            if i % 15 == 14:  # kill -9 wherever it is, then start another
                time.sleep(rng.uniform(0.3, 1.2))
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                kills += 1
                worker = etsypro(database_url, etsy_server[1], "etsy", "push")
        settle(etsy_engine, shop)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert kills == 4
    engine_prices = {etsy: Decimal(etsy_api.get(f"/shops/{shop}/listings/{listing}").json()["price"])
                     for etsy, listing in links.items()}
    assert {etsy: fake.price_of(etsy) for etsy in links} == engine_prices


def lower_limit(fake, per_second: int) -> int:
    """The fake's limit lowered from the next second on (the calls before may have filled this one
    past the new limit); answers the over-limit calls so far."""
    time.sleep(1.0 - time.time() % 1.0)
    fake.config.per_second = per_second
    return fake.over_limit_calls()


def calls_per_second(fake, since: float) -> dict[int, int]:
    """The fake's answered calls per wall-clock second since `since` (its budget's windows)."""
    seconds = [int(at) for at, _, _, status in fake.calls if at >= since and status != -429]
    return {second: seconds.count(second) for second in set(seconds)}


def settle(engine, shop: str, timeout: float = 40.0) -> None:
    """Until the queue follower reached the log's head and the shop's queue is empty."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(engine.core.conninfo, autocommit=True) as conn:
        while time.monotonic() < deadline:
            head = conn.execute("SELECT coalesce(max(notification_id), 0) FROM pricing_events").fetchone()[0]
            at = conn.execute("SELECT coalesce(max(log_position), 0) FROM streams.policy_positions WHERE policy = 'etsy-push'").fetchone()[0]
            waiting = conn.execute("SELECT count(*) FROM marketplace.etsy_push_queue WHERE shop_id = %s", [shop]).fetchone()[0]
            if at >= head and waiting == 0:
                return
            time.sleep(0.2)
    raise AssertionError(f"the pusher did not settle: position {at} of {head}, {waiting} waiting")


def test_two_workers_sharing_the_budget_in_redis_never_go_over_it(world, etsy_engine, etsy_server, fake):
    key = f"test-{uuid.uuid4().hex}"
    clients = [client_of(etsy_server[1], per_second=12, shared=SharedPace("redis://127.0.0.1:6379", key)) for _ in range(2)]
    calls_together_stay_within(12, clients, 18, world, etsy_engine, fake)


def test_every_client_of_one_app_in_a_process_takes_from_one_budget(world, etsy_engine, etsy_server, fake):
    """The pusher, the scheduled sync and the routes of one serve (no Redis needed) never go over Etsy's limit together."""
    clients = [app_client(etsy_server[1]) for _ in range(3)]
    assert clients[0].budget is clients[1].budget is clients[2].budget
    calls_together_stay_within(12, clients, 12, world, etsy_engine, fake)


def calls_together_stay_within(limit: int, clients: list, calls_each: int, world, etsy_engine, fake) -> None:
    """`calls_each` calls from each client, in a thread each, at the fake's `limit`: none over it, none throttled,
    no second holding more than the limit."""
    token = etsy_engine.marketplace.grant(uuid.UUID(world["shop"])).access_token
    etsy_id = world["listings"][0].listing_id
    over = lower_limit(fake, limit)
    try:
        clients[0].inventory(token, etsy_id)  # the headers tell the limit
        started_at = time.time()
        threads = [threading.Thread(target=lambda c=c: [c.inventory(token, etsy_id) for _ in range(calls_each)])
                   for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert fake.over_limit_calls() == over and sum(c.budget.throttled for c in {id(c.budget): c for c in clients}.values()) == 0
        assert max(calls_per_second(fake, started_at).values()) <= limit
        assert time.time() - started_at > len(clients) * calls_each / limit - 1  # spaced, not burst
    finally:
        fake.config.per_second = 200
        for c in clients:
            c.close()


def test_a_spent_daily_quota_pauses_pushes_as_retries(world, etsy_api, etsy_engine, etsy_server, fake):
    etsy_id = world["listings"][0].listing_id
    version = set_price(etsy_api, world["shop"], world["links"][etsy_id], "26.00")
    PushQueue(etsy_engine.core.conninfo).catch_up()
    pusher = pusher_of(etsy_engine, etsy_server[1])
    pusher.client.budget.remaining_today = 0  # as Etsy's x-remaining-today last said
    try:
        pusher.step()
    finally:
        pusher.close()
    assert pusher.stats.retrying == 1 and fake.price_of(etsy_id) == Decimal("20.00")
    assert outcomes(etsy_engine, world["links"][etsy_id], version) == ["Started", "Retrying"]


def test_serve_syncs_and_pushes_in_process_when_an_etsy_app_is_configured(new_database, tmp_path):
    url = new_database()
    with etsy_in_environment("http://127.0.0.1:1") as fake:  # the callback's address once the server has one
        os.environ["ETSYPRO_ETSY_SYNC_EVERY_MINUTES"] = "0.005"
        try:
            settings = Settings.from_env({"ETSYPRO_DATABASE_URL": url, "ETSYPRO_DATA_DIR": str(tmp_path),
                                          "ETSYPRO_POOL_SIZE": "2", "ETSYPRO_ANALYZE_EVERY_HOURS": "0",
                                          "ETSYPRO_SECRET_KEY": SECRET_KEY})
            engine, app = build(settings, log=lambda *_: None)
        finally:
            del os.environ["ETSYPRO_ETSY_SYNC_EVERY_MINUTES"]
        assert [w._thread.name for w in app.state.etsy_workers] == ["etsy-queue", "etsy-push", "etsy-sync"]
        assert app.state.etsy_workers[1].follower.client.budget is app.state.etsy_workers[2].follower.client.budget
        try:
            with running(app) as base, httpx.Client(base_url=base, headers=Accounts(engine).new("seller"),
                                                    timeout=60) as api:
                os.environ["ETSYPRO_ETSY_REDIRECT_URI"] = f"{base}/marketplace/etsy/callback"
                shop = open_shop(api)
                etsy_shop, [mug] = etsy_shop_with_listings(fake, 1)
                connect(api, fake, shop, etsy_shop)
                deadline = time.monotonic() + 60
                while not (links := linked(engine, shop)):  # the scheduled sync registers the Etsy listing
                    assert time.monotonic() < deadline, "serve did not sync the connected shop"
                    time.sleep(0.1)
                set_price(api, shop, links[mug.listing_id], "27.50")
                while fake.price_of(mug.listing_id) != Decimal("27.50"):  # the in-process pusher sends it
                    assert time.monotonic() < deadline, "serve did not push the price"
                    time.sleep(0.1)
            assert not any(w._thread.is_alive() for w in app.state.etsy_workers)  # stopped with the app
        finally:
            engine.close()
    engine, app = build(settings, log=lambda *_: None)  # no Etsy app configured: none
    engine.close()
    assert app.state.etsy_workers == []
