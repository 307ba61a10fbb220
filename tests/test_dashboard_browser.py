"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright) against a real
uvicorn server with the projector running in process, as `etsypro serve` runs it.

Each test saves a screenshot under tests/screenshots/ (git-ignored) for a person to look at."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pyotp
import pytest

import codec
from api.app import create_app
from api.auth import AuthSettings
from api.server import running
from conftest import listing_spec
from projections.projector import InBackground, Projector

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
if not CHROMIUM.exists():  # ./dev test installs it; a run without it must not pass as if it had tested the page
    pytest.fail("the browser tests need Debian's chromium at /usr/bin/chromium (./dev test installs it with apt-get)",
                pytrace=False)
LIVE_WITHIN_S = 1.0


def serve_with_projector(engine, database_url, **auth):
    app = create_app(engine, auth_settings=AuthSettings(login_per_minute=10**6, token_per_minute=10**6, **auth))
    app.state.projector = InBackground.projector(Projector(database_url, codec.to_domain_event, pause=0.02))
    return running(app)


@pytest.fixture(scope="module")
def url(engine, database_url):
    with serve_with_projector(engine, database_url) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    errors = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    yield tab
    SCREENSHOTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, errors


class World:
    """A seller with TOTP, a shop of three listings, and an analyst of the same tenant."""

    def __init__(self, url: str, accounts):
        self.url = url
        self.seller = accounts.new("seller")
        self.api = httpx.Client(base_url=url, headers=self.seller, timeout=30)
        self.shop = self.api.post("/shops", json={"name": "Hedgerow Ceramics", "currency": "GBP"}).json()["shop_id"]
        registered = self.api.post(f"/shops/{self.shop}/listings",
                                   json={"listings": [listing_spec(i, title=f"Mug {i}") for i in range(3)]})
        self.listings = [x["listing_id"] for x in registered.json()["listings"]]
        self._history()
        self.totp = self._enroll()
        self.analyst = accounts.new("analyst", self.seller.tenant_id)
        # A colleague without MFA for the other tests: a TOTP step signs in once (replays are refused).
        self.colleague = accounts.new("seller", self.seller.tenant_id, shops=[self.shop])

    def _history(self) -> None:
        """A month of sales and competitor prices, so that the charts have something to draw."""
        now = datetime.now(timezone.utc)
        sales = [{"listing_id": lid, "quantity": 1 + (day + i) % 4, "unit_price": "20.00", "currency": "GBP",
                  "order_id": f"o-{day}-{i}", "transaction_id": f"t-{day}-{i}", "sold_at": (now - timedelta(days=day)).isoformat()}
                 for day in range(1, 31) for i, lid in enumerate(self.listings)]
        seen = [{"listing_id": lid, "competitor": f"c{j}", "price": f"{17 + j + day % 3}.00", "currency": "GBP",
                 "observed_at": (now - timedelta(days=day)).isoformat()}
                for day in range(0, 6) for lid in self.listings for j in range(3)]
        assert self.api.post(f"/shops/{self.shop}/sales", json={"sales": sales}).status_code == 201
        assert self.api.post(f"/shops/{self.shop}/observations", json={"observations": seen}).status_code == 201

    def _enroll(self) -> pyotp.TOTP:
        totp = pyotp.TOTP(self.api.post("/auth/mfa/enroll").json()["secret"])
        # The previous step's code: the login below uses the current one (a used step is refused).
        confirmed = self.api.post("/auth/mfa/confirm", json={"code": totp.at(time.time() - 30)})
        assert confirmed.status_code == 200, confirmed.text
        self.recovery_codes = confirmed.json()["recovery_codes"]
        return totp

    def price(self, listing: str) -> str:
        return self.api.get(f"/shops/{self.shop}/listings/{listing}").json()["price"]

    def version(self, listing: str) -> int:
        """The listing's version, replayed from the store: it moves with every event of the listing."""
        return self.api.get(f"/shops/{self.shop}/listings/{listing}").json()["version"]


@pytest.fixture(scope="module")
def world(url, accounts) -> World:
    return World(url, accounts)


def sign_in(page, url: str, tenant: str, username: str, password: str, code: str | None = None,
            recovery: str | None = None) -> None:
    page.goto(url)
    page.fill("#login-form input[name=tenant]", tenant)
    page.fill("#login-form input[name=username]", username)
    page.fill("#login-form input[name=password]", password)
    page.click("#login-form button[type=submit]")
    if code or recovery:
        page.wait_for_selector("#mfa-form:not([hidden])")
        page.fill("#mfa-form input[name=code]" if code else "#mfa-form input[name=recovery_code]", code or recovery)
        page.click("#mfa-form button[type=submit]")
    page.wait_for_selector("#top:not([hidden])")


def seller_signs_in(page, world: World, with_totp: bool = False) -> None:
    s = world.seller if with_totp else world.colleague
    sign_in(page, world.url, s.tenant_id, s.username, s.password, code=world.totp.now() if with_totp else None)
    expect(page.locator("#board-body tr")).to_have_count(3)
    page.wait_for_selector("#stream-state:text('Live: live')")


def row_price(page, listing: str) -> str:
    return page.inner_text(f"#board-body tr[data-id='{listing}'] td.price")


def test_sign_in_with_totp_shows_the_board_and_a_change_through_the_api_within_a_second(page, world):
    seller_signs_in(page, world, with_totp=True)
    assert row_price(page, world.listings[0]) == "20.00 GBP"
    assert page.locator("#board-body tr").count() == 3
    page.fill("#board-search", "mug 2")  # search narrows the board
    assert page.locator("#board-body tr").count() == 1
    page.fill("#board-search", "")

    sent = time.monotonic()
    changed = world.api.put(f"/shops/{world.shop}/listings/{world.listings[0]}/price",
                            json={"price": "23.00", "currency": "GBP", "reason": "live check"})
    assert changed.status_code == 200, changed.text
    expect(page.locator(f"#board-body tr[data-id='{world.listings[0]}'] td.price")).to_have_text("23.00 GBP", timeout=3000)
    assert time.monotonic() - sent <= LIVE_WITHIN_S
    assert "live check" in page.inner_text(f"#board-body tr[data-id='{world.listings[0]}'] td.last")


def test_a_recovery_code_signs_in_too(page, world):
    s = world.seller
    sign_in(page, world.url, s.tenant_id, s.username, s.password, recovery=world.recovery_codes[0])
    expect(page.locator("#board-body tr")).to_have_count(3)


def test_undo_a_change_from_the_listing_page_after_confirming(page, world):
    listing = world.listings[1]
    world.api.put(f"/shops/{world.shop}/listings/{listing}/price", json={"price": "25.00", "currency": "GBP"})
    seller_signs_in(page, world)
    page.click(f"#board-body tr[data-id='{listing}'] a")
    page.wait_for_selector("#changes tbody tr[data-version='2'] button.undo")
    page.click("#changes tbody tr[data-version='2'] button.undo")
    assert "from 25.00 back to 20.00 GBP" in page.inner_text("#confirm-body")
    page.fill("#confirm-reason", "wrong price")
    page.click("#confirm-ok")
    page.wait_for_selector("#message.info:text('Rolled back')")
    assert world.price(listing) == "20.00"
    page.wait_for_selector("#listing-price:text('20.00 GBP')")  # the page follows its own change live


def test_the_emergency_stop_needs_a_confirmation_and_stops_the_shop(page, world):
    seller_signs_in(page, world)
    page.click("#nav-shop")
    page.click("#emergency-stop")
    page.click("#confirm button[value=cancel]")  # cancelled: nothing happens
    assert world.api.get(f"/shops/{world.shop}/automation").json()["running"] is True
    page.click("#emergency-stop")
    assert "stop changing prices" in page.inner_text("#confirm-body")
    page.fill("#confirm-reason", "supplier error")
    page.click("#confirm-ok")
    page.wait_for_selector("#automation-state:text('Stopped')")
    assert world.api.get(f"/shops/{world.shop}/automation").json()["running"] is False
    page.screenshot(path=str(SCREENSHOTS / "emergency_stop_pressed.png"))
    page.click("#resume")
    page.click("#confirm-ok")  # a reason is required: the dialog stays open
    assert page.locator("#confirm[open]").count() == 1
    page.fill("#confirm-reason", "supplier fixed the feed")
    page.click("#confirm-ok")
    page.wait_for_selector("#automation-state:text('Running')")
    assert world.api.get(f"/shops/{world.shop}/automation").json()["running"] is True


def test_an_analyst_sees_no_write_controls_and_the_api_refuses_anyway(page, world):
    a = world.analyst
    sign_in(page, world.url, a.tenant_id, a.username, a.password)
    expect(page.locator("#board-body tr")).to_have_count(3)
    page.click(f"#board-body tr[data-id='{world.listings[2]}'] a")
    page.wait_for_selector("#changes")
    assert page.locator("#price-form").count() == 0
    assert page.locator("button.undo, button.restore").count() == 0
    page.click("#nav-shop")
    page.wait_for_selector("#automation-state")
    assert page.locator("#emergency-stop, #resume").count() == 0
    refused = httpx.put(f"{world.url}/shops/{world.shop}/listings/{world.listings[2]}/price", headers=a,
                        json={"price": "21.00", "currency": "GBP"})
    assert refused.status_code == 403


@pytest.mark.parametrize("typed, says", [("12,50", "Use a dot for decimals"), ("12abc", "no letters"),
                                         ("12.505", "At most 2 decimals")])
def test_a_price_typed_wrong_shows_why_and_changes_nothing(page, world, typed, says):
    listing = world.listings[2]
    seller_signs_in(page, world)
    page.goto(f"{world.url}/#/shop/{world.shop}/listing/{listing}")
    before = world.version(listing)
    page.fill("#new-price", typed)
    page.click("#price-form button[type=submit]")
    page.wait_for_selector(f"#message:text('{says}')")
    assert page.get_attribute("#new-price", "aria-invalid") == "true"
    assert world.version(listing) == before and world.price(listing) == "20.00"


def test_a_price_outside_the_guardrails_shows_the_engines_refusal(page, world):
    listing = world.listings[2]
    seller_signs_in(page, world)
    page.goto(f"{world.url}/#/shop/{world.shop}/listing/{listing}")
    page.fill("#new-price", "99.00")  # above the ceiling of 40.00
    page.click("#price-form button[type=submit]")
    page.wait_for_selector("#message:text('(price)')")
    assert world.price(listing) == "20.00"


def test_a_refused_rollback_shows_why_and_changes_nothing(page, world):
    listing = world.listings[2]
    for price in ("21.00", "22.00"):
        world.api.put(f"/shops/{world.shop}/listings/{listing}/price", json={"price": price, "currency": "GBP"})
    seller_signs_in(page, world)
    page.goto(f"{world.url}/#/shop/{world.shop}/listing/{listing}")
    page.wait_for_selector("#changes tbody tr[data-version='2'] button.undo")
    before = world.version(listing)
    page.click("#changes tbody tr[data-version='2'] button.undo")  # the price changed since: refused
    page.click("#confirm-ok")
    page.wait_for_selector("#message:not(.info):text('Rollback refused')")
    assert world.version(listing) == before and world.price(listing) == "22.00"


@pytest.fixture(scope="module")
def short_url(engine, database_url):
    """Access tokens that expire after 2 s (no clock leeway): a session runs out during a test."""
    with serve_with_projector(engine, database_url, access_token_ttl=timedelta(seconds=2), clock_leeway_s=0) as base:
        yield base


def test_an_expired_session_asks_to_sign_in_over_the_page_and_changes_nothing_meanwhile(page, world, short_url, accounts):
    seller = accounts.new("seller", world.seller.tenant_id, shops=[world.shop])
    sign_in(page, short_url, seller.tenant_id, seller.username, seller.password)
    page.goto(f"{short_url}/#/shop/{world.shop}/listing/{world.listings[0]}")
    page.wait_for_selector("#new-price")
    time.sleep(2.5)  # the access token expired; the refresh cookie renews it unseen
    page.reload()
    page.wait_for_selector("#new-price")
    page.context.clear_cookies()  # and now the session cannot be renewed: it has ended
    time.sleep(2.5)
    before, price = world.version(world.listings[0]), world.price(world.listings[0])
    page.fill("#new-price", "24.00")
    page.click("#price-form button[type=submit]")
    page.wait_for_selector("#signin[open]")
    assert "session expired" in page.inner_text("#message")
    page.screenshot(path=str(SCREENSHOTS / "expired_session_sign_in_again.png"))
    assert world.version(world.listings[0]) == before and world.price(world.listings[0]) == price
    assert page.input_value("#new-price") == "24.00"  # the page and what was typed are still there
    page.keyboard.press("Escape")  # the dialog stays: nothing works behind it without a session
    assert page.locator("#signin[open]").count() == 1
    page.fill("#login-form input[name=tenant]", seller.tenant_id)
    page.fill("#login-form input[name=username]", seller.username)
    page.fill("#login-form input[name=password]", seller.password)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#message.info:text('Price set to 24.00 GBP')")  # signed in again, the change went on
    assert world.price(world.listings[0]) == "24.00"
    expect(page.locator("#stream-state")).to_have_text("Live: live")  # the stream resumed too
    expect(page.locator("#listing-price")).to_have_text("24.00 GBP")  # and brought the change


@pytest.fixture
def phone(browser, request):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    yield tab
    SCREENSHOTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def test_the_board_sorts_and_filters_by_keyboard_at_phone_width(phone, world):
    c = world.colleague
    phone.goto(world.url)
    phone.fill("#login-form input[name=tenant]", c.tenant_id)
    phone.fill("#login-form input[name=username]", c.username)
    phone.fill("#login-form input[name=password]", c.password)
    phone.keyboard.press("Enter")  # the form submits from the keyboard
    expect(phone.locator("#board-body tr")).to_have_count(3)
    world.api.put(f"/shops/{world.shop}/listings/{world.listings[2]}/price", json={"price": "39.00", "currency": "GBP"})
    expect(phone.locator(f"#board-body tr[data-id='{world.listings[2]}'] td.price")).to_have_text("39.00 GBP")
    sort = phone.locator("#board th button[data-sort=price]")
    sort.focus()
    phone.keyboard.press("Enter")
    phone.keyboard.press("Enter")  # again: descending
    assert phone.get_attribute("#board th:has(button[data-sort=price])", "aria-sort") == "descending"
    prices = [float(p.split()[0]) for p in phone.locator("#board-body td.price").all_inner_texts()]
    assert prices == sorted(prices, reverse=True) and prices[0] == 39.0
    assert phone.evaluate("document.activeElement.dataset.sort") == "price"  # the focus stayed
    phone.select_option("#board-source", "manual")
    expect(phone.locator(f"#board-body tr[data-id='{world.listings[2]}']")).to_have_count(1)
    phone.select_option("#board-source", "rule")  # no rule priced anything in this shop
    expect(phone.locator("#board-body tr")).to_have_count(0)
    expect(phone.locator("#board-count")).to_have_text("0 shown")
    phone.select_option("#board-source", "")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
    phone.locator(f"#board-body tr[data-id='{world.listings[2]}'] a").focus()
    phone.keyboard.press("Enter")  # a listing opens from the keyboard, and the focus moves to it
    expect(phone.locator("#changes")).to_be_visible()
    assert phone.evaluate("document.activeElement.id") == "main"


def test_an_auditor_filters_the_timeline_reads_a_history_and_verifies_the_chain(page, world, accounts):
    auditor = accounts.new("auditor", world.seller.tenant_id)
    sign_in(page, world.url, auditor.tenant_id, auditor.username, auditor.password)
    expect(page.locator("#board-body tr")).to_have_count(3)
    assert page.locator("#price-form, #emergency-stop").count() == 0
    page.click("#nav-audit")
    expect(page.locator("#timeline tr").first).to_be_visible()
    page.fill("input[name=type]", "Listing.Registered")
    page.click("form.toolbar button[type=submit] >> text=Filter")
    expect(page.locator("#timeline tr")).to_have_count(3)
    assert set(page.locator("#timeline td:nth-child(3)").all_inner_texts()) == {"Listing.Registered"}
    page.click("#verify")
    expect(page.locator("#verify-result")).to_contain_text("Chain intact")
    page.fill("input[name=aggregate]", world.listings[0])
    page.click("text=History")
    expect(page.locator("#history pre")).to_contain_text("v1 ")
    assert "Listing.Registered" in page.inner_text("#history pre")


def test_a_live_update_of_the_listing_keeps_what_was_being_typed(page, world):
    listing = world.listings[1]
    seller_signs_in(page, world)
    page.goto(f"{world.url}/#/shop/{world.shop}/listing/{listing}")
    page.fill("#new-price", "31.5")
    version = world.version(listing)
    world.api.put(f"/shops/{world.shop}/listings/{listing}/price", json={"price": "26.00", "currency": "GBP"})
    expect(page.locator("#listing-price")).to_have_text("26.00 GBP")  # re-rendered live
    assert f"version {version + 1}" in page.inner_text("#listing-state")
    assert page.input_value("#new-price") == "31.5"
    assert page.evaluate("document.activeElement.id") == "new-price"


def test_demand_panels_are_hidden_before_the_models_run_and_shown_after(page, world, database_url):
    from read.model_runs import refresh

    listing = world.listings[0]
    seller_signs_in(page, world)
    page.goto(f"{world.url}/#/shop/{world.shop}/listing/{listing}")
    expect(page.locator("#changes")).to_be_visible()
    assert page.locator("#elasticity, #forecast, #recommendation").count() == 0  # hidden, not broken
    refresh(database_url, world.shop, processes=1)
    page.reload()
    expect(page.locator("#elasticity")).to_be_visible()
    assert "price" in page.inner_text("#elasticity")  # one price all month: refused, saying what it needs
    expect(page.locator("#forecast svg")).to_be_visible()
    page.click("#nav-shop")
    expect(page.locator("#automation-state")).to_be_visible()
    expect(page.locator(".legend")).to_contain_text("Revenue forecast, 95% interval")
