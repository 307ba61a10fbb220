"""Rollback never edits history: it appends a PriceChanged with source "rollback" that names the versions
it compensates. Bulk rollback never overwrites a listing someone else changed since. Replay answers
"what was the listing at version V / at time T"."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from conftest import listing_spec, price_changes


def set_price(api, shop, listing, price: str, **extra) -> dict:
    response = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": price, "currency": "GBP", **extra})
    assert response.status_code == 200, response.text
    return response.json()


def state(api, shop, listing, **params) -> dict:
    response = api.get(f"/shops/{shop}/listings/{listing}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def rollback(api, shop, listing, **body) -> httpx.Response:
    return api.post(f"/shops/{shop}/listings/{listing}/rollback", json=body)


def bulk_rollback(api, shop, **body) -> httpx.Response:
    return api.post(f"/shops/{shop}/rollbacks", json=body)


@pytest.fixture
def priced(api, shop, listing) -> str:
    """A listing whose price went 20.00 (v1) -> 25.00 (v2) -> 30.00 (v3)."""
    set_price(api, shop, listing, "25.00")
    set_price(api, shop, listing, "30.00")
    return listing


def assert_compensation(engine, listing, version: int, price: str, compensates: list[int], reason: str = ""):
    last = price_changes(engine, listing)[-1]
    assert last.originator_version == version
    assert str(last.price.amount) == price
    assert last.compensates == compensates
    assert (last.meta.source, engine.identity.vault.reveal(last.meta.reason)) == ("rollback", reason)  # sealed in the log


# -- one listing ----------------------------------------------------------------------------------
class TestRollbackListing:
    def test_to_version_restores_that_price_and_compensates_every_later_change(self, api, shop, priced, engine):
        response = rollback(api, shop, priced, to_version=1, reason="bad import")
        assert response.status_code == 200, response.text
        assert response.json() == {"listing_id": priced, "version": 4, "changed": True, "price": "20.00",
                                   "currency": "GBP", "compensates": [2, 3]}
        assert_compensation(engine, priced, 4, "20.00", [2, 3], "bad import")
        # History is intact: the compensated changes are still there.
        assert [str(c.price.amount) for c in price_changes(engine, priced)] == ["25.00", "30.00", "20.00"]

    def test_to_time_restores_the_price_of_that_moment(self, api, shop, listing, engine):
        set_price(api, shop, listing, "25.00")
        moment = state(api, shop, listing)["modified_at"]  # recorded time of version 2
        set_price(api, shop, listing, "30.00")
        response = rollback(api, shop, listing, to_time=moment)
        assert (response.status_code, response.json()["price"], response.json()["compensates"]) == (200, "25.00", [3])
        assert_compensation(engine, listing, 4, "25.00", [3])

    def test_to_time_before_the_listing_existed_is_refused(self, api, shop, priced):
        response = rollback(api, shop, priced, to_time="2001-01-01T00:00:00Z")
        assert (response.status_code, response.json()["field"]) == (422, "to_time")

    def test_undo_version_of_the_latest_change_restores_what_it_replaced(self, api, shop, priced, engine):
        response = rollback(api, shop, priced, undo_version=3)
        assert (response.status_code, response.json()["price"], response.json()["compensates"]) == (200, "25.00", [3])
        assert_compensation(engine, priced, 4, "25.00", [3])

    def test_undo_of_a_change_that_is_no_longer_the_latest_is_409_and_writes_nothing(self, api, shop, priced,
                                                                                      count_events):
        before = count_events()
        response = rollback(api, shop, priced, undo_version=2)
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
        assert (response.json()["field"], response.json()["current_version"]) == ("undo_version", 3)
        assert count_events() == before
        assert state(api, shop, priced)["price"] == "30.00"

    def test_undo_of_a_version_that_is_not_a_price_change_is_refused(self, api, shop, listing):
        response = rollback(api, shop, listing, undo_version=1)  # version 1 is the registration
        assert (response.status_code, response.json()["field"]) == (422, "undo_version")

    def test_a_rollback_can_itself_be_undone(self, api, shop, priced, engine):
        rollback(api, shop, priced, to_version=1)
        response = rollback(api, shop, priced, undo_version=4)
        assert (response.json()["price"], response.json()["compensates"]) == ("30.00", [4])

    @pytest.mark.parametrize("body", [{}, {"to_version": 1, "undo_version": 2},
                                      {"to_version": 1, "to_time": "2026-01-01T00:00:00Z"}])
    def test_exactly_one_target_must_be_given(self, api, shop, priced, body, count_events):
        before = count_events()
        response = rollback(api, shop, priced, **body)
        assert response.status_code == 422 and response.json()["field"] in ("to_version", "to_time", "undo_version")
        assert count_events() == before

    def test_a_version_the_listing_has_not_reached_is_refused(self, api, shop, priced):
        response = rollback(api, shop, priced, to_version=9)
        assert (response.status_code, response.json()["field"]) == (422, "to_version")

    def test_restoring_a_price_now_outside_the_guardrails_is_refused(self, api, shop, priced, count_events):
        api.put(f"/shops/{shop}/listings/{priced}/guardrails", json={"floor": "28.00", "currency": "GBP"})
        before = count_events()
        response = rollback(api, shop, priced, to_version=1)
        assert response.status_code == 409 and response.json()["field"] == "price"
        assert "floor" in response.json()["detail"]
        assert count_events() == before

    def test_rolling_back_to_the_current_price_writes_nothing(self, api, shop, listing, count_events):
        set_price(api, shop, listing, "25.00")
        before = count_events()
        response = rollback(api, shop, listing, to_version=2)
        assert (response.json()["changed"], response.json()["compensates"]) == (False, [])
        assert count_events() == before

    def test_a_stale_expected_version_is_409(self, api, shop, priced):
        response = rollback(api, shop, priced, to_version=1, expected_version=2)
        assert (response.status_code, response.json()["current_version"]) == (409, 3)


# -- many listings --------------------------------------------------------------------------------------
def register(api, shop, n: int) -> list[str]:
    response = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(i) for i in range(n)]})
    assert response.status_code == 201, response.text
    return [x["listing_id"] for x in response.json()["listings"]]


def bulk_price(api, shop, ids, price: str, **extra) -> None:
    response = api.post(f"/shops/{shop}/price-changes", json={
        "changes": [{"listing_id": x, "price": price} for x in ids], "currency": "GBP", **extra})
    assert response.status_code == 200, response.text


class TestBulkRollback:
    def test_by_source_compensates_the_matching_changes_and_skips_listings_changed_since_by_someone_else(
            self, api, shop, engine):
        a, b, c = register(api, shop, 3)
        bulk_price(api, shop, [a, b, c], "18.00", source="experiment", reason="5% off test")  # v2 on each
        set_price(api, shop, c, "33.00", reason="supplier price rise", source="manual")     # c: v3, someone else

        response = bulk_rollback(api, shop, source="experiment", reason="experiment over")
        assert response.status_code == 200, response.text
        compensated, skipped = response.json()["compensated"], response.json()["skipped"]
        assert sorted(x["listing_id"] for x in compensated) == sorted([a, b])
        assert all((x["price"], x["compensates"]) == ("20.00", [2]) for x in compensated)
        [skip] = skipped
        assert (skip["listing_id"], skip["reason"], skip["version"], skip["source"]) == (
            c, "changed since by someone else", 3, "manual")

        for x in (a, b):
            assert_compensation(engine, x, 3, "20.00", [2], "experiment over")
        assert state(api, shop, c)["price"] == "33.00"  # never overwritten
        # One command: both compensations share a command id.
        assert len({price_changes(engine, x)[-1].meta.command_id for x in (a, b)}) == 1

    def test_by_rule_touches_only_that_rule(self, api, shop, engine):
        a, b = register(api, shop, 2)
        set_price(api, shop, a, "19.00", source="experiment", rule="beat-lowest-5pct")
        set_price(api, shop, b, "19.00", source="experiment", rule="match-median")
        response = bulk_rollback(api, shop, rule="beat-lowest-5pct")
        assert [x["listing_id"] for x in response.json()["compensated"]] == [a]
        assert (state(api, shop, a)["price"], state(api, shop, b)["price"]) == ("20.00", "19.00")

    def test_by_actor_touches_only_that_actors_changes(self, api, base_url, tenant, accounts, shop):
        a, b = register(api, shop, 2)
        bot = accounts.new("service", tenant.tenant_id)  # a repricing script of the same tenant
        assert httpx.put(f"{base_url}/shops/{shop}/listings/{a}/price", headers=bot,
                         json={"price": "17.00", "currency": "GBP"}).status_code == 200
        set_price(api, shop, b, "17.00")  # by the seller
        response = bulk_rollback(api, shop, actor=bot.account_id)
        assert [x["listing_id"] for x in response.json()["compensated"]] == [a]
        assert (state(api, shop, a)["price"], state(api, shop, b)["price"]) == ("20.00", "17.00")

    def test_by_time_window_touches_only_changes_recorded_inside_it(self, api, shop, engine):
        early, late = register(api, shop, 2)
        set_price(api, shop, early, "21.00")
        since = datetime.fromisoformat(state(api, shop, early)["modified_at"]) + timedelta(microseconds=1)
        set_price(api, shop, late, "22.00")
        until = datetime.fromisoformat(state(api, shop, late)["modified_at"]) + timedelta(microseconds=1)
        set_price(api, shop, early, "23.00")  # after the window

        response = bulk_rollback(api, shop, since=since.isoformat(), until=until.isoformat())
        assert [x["listing_id"] for x in response.json()["compensated"]] == [late]
        assert state(api, shop, late)["price"] == "20.00"
        assert state(api, shop, early)["price"] == "23.00"

    def test_a_listing_whose_earlier_price_is_now_outside_its_guardrails_is_skipped_with_a_reason(
            self, api, shop):
        a, b = register(api, shop, 2)
        bulk_price(api, shop, [a, b], "15.00", source="experiment")
        api.put(f"/shops/{shop}/listings/{a}/guardrails", json={"floor": "10.00", "ceiling": "18.00",
                                                                "currency": "GBP"})
        response = bulk_rollback(api, shop, source="experiment")
        assert [x["listing_id"] for x in response.json()["compensated"]] == [b]
        [skip] = response.json()["skipped"]
        assert skip["listing_id"] == a and "guardrails" in skip["reason"] and "ceiling" in skip["reason"]
        assert state(api, shop, a)["price"] == "15.00"

    def test_changes_already_compensated_are_not_compensated_twice(self, api, shop, count_events):
        ids = register(api, shop, 2)
        bulk_price(api, shop, ids, "19.00", source="import")
        assert len(bulk_rollback(api, shop, source="import").json()["compensated"]) == 2
        before = count_events()
        assert bulk_rollback(api, shop, source="import").json() == {"compensated": [], "skipped": []}
        assert count_events() == before

    def test_several_matching_changes_restore_the_price_before_the_first(self, api, shop, engine):
        [a] = register(api, shop, 1)
        set_price(api, shop, a, "19.00", source="experiment", rule="r")
        set_price(api, shop, a, "18.00", source="experiment", rule="r")
        [x] = bulk_rollback(api, shop, rule="r").json()["compensated"]
        assert (x["price"], x["compensates"]) == ("20.00", [2, 3])

    def test_matching_changes_that_cancel_out_write_nothing_and_say_so(self, api, shop, count_events):
        [a] = register(api, shop, 1)
        set_price(api, shop, a, "19.00", source="experiment", rule="r")
        set_price(api, shop, a, "20.00", source="experiment", rule="r")
        before = count_events()
        [x] = bulk_rollback(api, shop, rule="r").json()["compensated"]
        assert (x["changed"], x["compensates"], x["version"]) == (False, [], 3)
        assert count_events() == before

    def test_a_filter_is_required(self, api, shop, count_events):
        before = count_events()
        response = bulk_rollback(api, shop, reason="everything")
        assert response.status_code == 422 and response.json()["field"]
        assert count_events() == before


# -- as-of state ----------------------------------------------------------------------------------------
class TestAsOf:
    def test_a_listing_as_of_each_version(self, api, shop, priced):
        assert [state(api, shop, priced, version=v)["price"] for v in (1, 2, 3)] == ["20.00", "25.00", "30.00"]
        assert state(api, shop, priced, version=2)["version"] == 2

    def test_a_listing_as_of_a_moment(self, api, shop, listing):
        set_price(api, shop, listing, "25.00")
        moment = state(api, shop, listing)["modified_at"]
        set_price(api, shop, listing, "30.00")
        then = state(api, shop, listing, at=moment)
        assert (then["version"], then["price"]) == (2, "25.00")
        just_before = (datetime.fromisoformat(moment) - timedelta(microseconds=1)).isoformat()
        assert state(api, shop, listing, at=just_before)["price"] == "20.00"

    def test_the_past_survives_a_rollback(self, api, shop, priced):
        rollback(api, shop, priced, to_version=1)
        assert state(api, shop, priced, version=3)["price"] == "30.00"
        assert state(api, shop, priced)["price"] == "20.00"

    def test_a_version_not_reached_is_404(self, api, shop, priced):
        response = api.get(f"/shops/{shop}/listings/{priced}", params={"version": 4})
        assert (response.status_code, response.json()["field"]) == (404, "version")

    def test_a_moment_before_the_listing_existed_is_404(self, api, shop, listing):
        response = api.get(f"/shops/{shop}/listings/{listing}", params={"at": "2001-01-01T00:00:00+00:00"})
        assert (response.status_code, response.json()["field"]) == (404, "at")

    def test_a_moment_without_a_timezone_is_refused(self, api, shop, listing):
        response = api.get(f"/shops/{shop}/listings/{listing}", params={"at": "2026-11-25T10:00:00"})
        assert (response.status_code, response.json()["field"]) == (422, "at")
