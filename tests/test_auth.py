"""Logging in over real HTTP on real PostgreSQL: passwords, TOTP, refresh rotation, lockout,
rate limits, and access tokens that must be refused."""

from __future__ import annotations

import base64
import itertools
import json
import random
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import jwt
import psycopg
import pyotp
import pytest

from api.app import create_app
from api.auth import ALGORITHM, AUDIENCE, ISSUER, AuthSettings, trusted_proxies
from api.server import running
from commands.credentials import Secrets
from api.routers.auth import REFUSAL_FLOOR_S
from domain.account import ACCOUNT_CEILING, CLIENT_FREE_FAILURES

REFUSED = "invalid username or password, or the account is temporarily locked"


# -- helpers ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_url(engine):
    """The API behind a local proxy: 127.0.0.1 is named a trusted proxy, so its X-Forwarded-For
    gives the client's address, and each test can speak from addresses of its own."""
    settings = AuthSettings(trusted_proxies=trusted_proxies("127.0.0.1"))
    with running(create_app(engine, auth_settings=settings)) as url:
        yield url


_addresses = itertools.count(random.randrange(1 << 16))


def client_ip() -> str:
    """A client address no other call gave, so each test has its own rate-limit bucket, as separate
    clients would (random draws collided now and then: a bucket already holding another's attempt)."""
    n = next(_addresses) % (1 << 17)  # 198.18.0.0/15, the range for benchmarks and tests (RFC 2544)
    return f"198.{18 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def from_client(ip: str) -> dict:
    return {"X-Forwarded-For": ip}


@pytest.fixture
def http(base_url):
    """Each request from an address of its own: these tests are about accounts, and the per-client
    rate limit (tested on its own below) would otherwise cut long flows short."""

    def new_address(request: httpx.Request) -> None:
        request.headers.setdefault("X-Forwarded-For", client_ip())

    with httpx.Client(base_url=base_url, timeout=60, event_hooks={"request": [new_address]}) as client:
        yield client


@pytest.fixture
def admin(accounts):
    return accounts.new("admin")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def make_person(http, admin, role: str = "seller", shops=(), password: str | None = None) -> dict:
    username = f"p-{uuid.uuid4().hex[:10]}"
    password = password or f"a long passphrase {uuid.uuid4().hex[:8]}"
    response = http.post("/accounts", headers=admin, json={"username": username, "password": password,
                                                           "roles": [{"role": role, "shops": None if shops is None else list(shops)}]})
    assert response.status_code == 201, response.text
    return {"username": username, "password": password, "account_id": response.json()["account_id"],
            "tenant": admin.tenant_id}


def login(http, person: dict, password: str | None = None, client: str | None = None) -> httpx.Response:
    return http.post("/auth/login", headers=from_client(client) if client else None,
                     json={"tenant": person["tenant"], "username": person["username"],
                           "password": password or person["password"]})


def tokens(http, person: dict) -> dict:
    response = login(http, person)
    assert response.status_code == 200, response.text
    return response.json()


def events_of(database_url, account_id: str) -> list[tuple[str, dict]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT topic, state FROM pricing_events WHERE originator_id = %s"
                            " ORDER BY originator_version", [account_id]).fetchall()
    return [(topic.split(".")[-1], json.loads(bytes(state))) for topic, state in rows]


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == REFUSED


# -- passwords and tokens -----------------------------------------------------------------------
def test_a_seller_logs_in_and_uses_the_access_token(http, admin):
    person = make_person(http, admin)
    answer = tokens(http, person)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 600
    me = http.get("/auth/me", headers=bearer(answer["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["username"] == person["username"] and me.json()["roles"] == {"seller": []}
    shop = http.post("/shops", headers=bearer(answer["access_token"]), json={"name": "Mine", "currency": "GBP"})
    assert shop.status_code == 201, shop.text
    # Opening the shop granted it to its seller, in the same transaction.
    assert http.get("/auth/me", headers=bearer(answer["access_token"])).json()["roles"] == {
        "seller": [shop.json()["shop_id"]]}


def test_refresh_rotates_and_reuse_revokes_the_whole_family(http, admin, database_url):
    person = make_person(http, admin)
    first = tokens(http, person)
    second = http.post("/auth/token", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert http.get("/auth/me", headers=bearer(second["access_token"])).status_code == 200
    # The spent token comes back: someone else holds a copy. Everything of this session dies.
    reused = http.post("/auth/token", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401
    assert http.post("/auth/token", json={"refresh_token": second["refresh_token"]}).status_code == 401
    assert http.get("/auth/me", headers=bearer(second["access_token"])).status_code == 401
    assert http.get("/auth/me", headers=bearer(first["access_token"])).status_code == 401
    revoked = [data for name, data in events_of(database_url, person["account_id"]) if name == "TokenFamilyRevoked"]
    assert [r["reason"] for r in revoked] == ["refresh_token_reused"]
    # Another login is another family, unaffected.
    assert http.get("/auth/me", headers=bearer(tokens(http, person)["access_token"])).status_code == 200


def test_logout_ends_the_session(http, admin, database_url):
    person = make_person(http, admin)
    session = tokens(http, person)
    other = tokens(http, person)
    assert http.post("/auth/logout", headers=bearer(session["access_token"])).status_code == 200
    assert http.get("/auth/me", headers=bearer(session["access_token"])).status_code == 401
    assert http.post("/auth/token", json={"refresh_token": session["refresh_token"]}).status_code == 401
    assert http.get("/auth/me", headers=bearer(other["access_token"])).status_code == 200  # only this session
    assert [d["reason"] for n, d in events_of(database_url, person["account_id"]) if n == "TokenFamilyRevoked"] == ["logout"]


def test_changing_the_password_ends_other_sessions(http, admin):
    person = make_person(http, admin)
    here, elsewhere = tokens(http, person), tokens(http, person)
    weak = http.post("/auth/password", headers=bearer(here["access_token"]),
                     json={"current_password": person["password"], "new_password": "password2024!"})
    assert weak.status_code == 422 and weak.json()["field"] == "new_password"
    wrong = http.post("/auth/password", headers=bearer(here["access_token"]),
                      json={"current_password": "not my password", "new_password": "another long passphrase"})
    assert wrong.status_code == 422 and wrong.json()["field"] == "current_password"
    changed = http.post("/auth/password", headers=bearer(here["access_token"]),
                        json={"current_password": person["password"], "new_password": "another long passphrase"})
    assert changed.status_code == 200, changed.text
    assert http.get("/auth/me", headers=bearer(here["access_token"])).status_code == 200
    assert http.get("/auth/me", headers=bearer(elsewhere["access_token"])).status_code == 401
    assert_refused(login(http, person))
    assert login(http, person, "another long passphrase").status_code == 200


@pytest.mark.parametrize("password, why", [
    ("short1!", "at least 10"),
    ("password123456", "too common"),
    ("Dragon2024!!", "too common"),        # a listed password with digits and symbols added
    ("aaaaaaaaaaaaaaa", "too few different"),
])
def test_the_password_policy_is_length_and_a_breached_list(http, admin, password, why):
    response = http.post("/accounts", headers=admin, json={"username": f"p-{uuid.uuid4().hex[:8]}",
                                                           "password": password, "roles": []})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "password" and why in response.json()["detail"]
    assert password not in response.text


def _refusal_cases(http, admin, accounts) -> dict:
    """Login bodies, by why each is refused: none of the causes may show in the answer or its time."""
    wrong, throttled = make_person(http, admin), make_person(http, admin)
    locked = make_person(http, admin)
    strangers = [client_ip(), client_ip()]  # taking turns: each stays within the per-address rate limit
    for stranger in strangers:
        for _ in range(CLIENT_FREE_FAILURES):  # this client must now wait before trying `throttled` again
            assert_refused(login(http, throttled, "not the password", client=stranger))
    turns = itertools.cycle(strangers)
    other_tenant = accounts.new("admin")
    return {
        "unknown user": lambda: {"tenant": admin.tenant_id, "username": f"nobody-{uuid.uuid4().hex[:8]}", "password": "a wrong password"},
        "unknown tenant": lambda: {"tenant": f"no-tenant-{uuid.uuid4().hex[:6]}", "username": wrong["username"], "password": wrong["password"]},
        "user of another tenant": lambda: {"tenant": other_tenant.tenant_id, "username": wrong["username"], "password": wrong["password"]},
        "wrong password": lambda: {"tenant": admin.tenant_id, "username": wrong["username"], "password": "a wrong password"},
        "throttled client, right password": lambda: {"tenant": admin.tenant_id, "username": throttled["username"],
                                                     "password": throttled["password"], "client": next(turns)},
        "locked, right password": lambda: {"tenant": admin.tenant_id, "username": locked["username"],
                                           "password": locked["password"], "lock": locked["account_id"]},
    }


def test_every_refused_login_gets_the_same_answer_in_the_same_time(http, admin, accounts, engine):
    cases = _refusal_cases(http, admin, accounts)

    def timed(body: dict) -> tuple[float, httpx.Response]:
        if "lock" in body:  # locked against unknown clients, as 100 strangers' failures would
            _lock_for_strangers(engine, body.pop("lock"))
        client = body.pop("client", None) or client_ip()
        started = time.perf_counter()
        response = httpx.post(f"{http.base_url}/auth/login", json=body, headers=from_client(client))
        return time.perf_counter() - started, response

    times: dict[str, list[float]] = {name: [] for name in cases}
    answers = set()
    for _ in range(7):  # interleaved, so that load on the machine hits every case alike
        for name, body in cases.items():
            elapsed, response = timed(body())
            assert_refused(response)
            answers.add((response.status_code, response.content, tuple(sorted(
                (k, v) for k, v in response.headers.items() if k not in ("date", "content-length")))))
            times[name].append(elapsed)
    assert len(answers) == 1, answers  # byte for byte, headers too
    medians = {name: statistics.median(t) for name, t in times.items()}
    # One argon2 verify each (real or wasted), failures recorded or not, and every refusal is
    # held to the same floor: the differences are noise.
    assert min(medians.values()) >= REFUSAL_FLOOR_S and max(medians.values()) / min(medians.values()) < 1.25, medians


def _lock_for_strangers(engine, account_id: str) -> None:
    from domain.account import FailureReason

    account = engine.core.repository.get(uuid.UUID(account_id))
    if account.locked_until is None:
        for i in range(ACCOUNT_CEILING):
            engine.identity._record_failure(engine.core.repository.get(account.id), FailureReason.BAD_PASSWORD, f"203.0.{i // 250}.{i % 250}")


# -- throttling and lockout ---------------------------------------------------------------------
def test_a_guessing_client_slows_only_itself(http, admin, accounts, database_url):
    person, guesser, owner = make_person(http, admin), client_ip(), client_ip()
    for _ in range(CLIENT_FREE_FAILURES):
        assert_refused(login(http, person, "not the password", client=guesser))
    assert_refused(login(http, person, client=guesser))  # the right password, but this client waits
    assert login(http, person, client=owner).status_code == 200  # the owner, elsewhere, is not locked out
    failed = [d for n, d in events_of(database_url, person["account_id"]) if n == "LoginFailed"]
    assert [f["reason"] for f in failed] == ["bad_password"] * CLIENT_FREE_FAILURES + ["throttled"]
    assert len({f["client"] for f in failed}) == 1 and {f["action"] for f in failed} == {"login"}
    assert guesser not in json.dumps(failed) and all(f["address"].startswith("sealed:v1:") for f in failed)
    assert "Locked" not in [n for n, _ in events_of(database_url, person["account_id"])]

    report = http.get("/security/logins", headers=admin).json()
    mine = [x for x in report["failed_logins"] if x["account_id"] == person["account_id"]]
    assert mine and mine[0]["failed"] == 6 and mine[0]["reasons"] == {"bad_password": 5, "throttled": 1}
    # An admin's unlock gives the client its budget back.
    assert http.post(f"/accounts/{person['account_id']}/unlock", headers=admin).status_code == 200
    assert login(http, person, client=guesser).status_code == 200


def test_a_hundred_failures_lock_out_strangers_but_not_the_owners_client(http, admin, accounts, database_url):
    """NIST SP 800-63B's ceiling: at most 100 failed attempts in a row, from any clients; the
    lock then holds against clients the account does not know."""
    from concurrent.futures import ThreadPoolExecutor

    person, owner = make_person(http, admin), client_ip()
    assert login(http, person, client=owner).status_code == 200  # the owner's client is known from now

    def guess(i: int) -> int:  # a botnet: each address stays within its free failures
        return login(http, person, f"guess number {i}", client=f"203.0.{i // 4 % 250}.{i % 4 + 1}").status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(guess, range(ACCOUNT_CEILING + 5))) == {401}
    events = events_of(database_url, person["account_id"])
    failed = [d["reason"] for n, d in events if n == "LoginFailed"]
    # Every failure counted, racing or not; the lock came once, at the hundredth.
    assert failed.count("bad_password") == ACCOUNT_CEILING and failed.count("locked") == 5
    assert [n for n, _ in events].count("Locked") == 1
    assert_refused(login(http, person, client=client_ip()))       # a new client: locked out, same answer
    assert login(http, person, client=owner).status_code == 200  # the owner's client: in

    report = http.get("/security/logins", headers=admin).json()
    lock = [x for x in report["lockouts"] if x["account_id"] == person["account_id"]]
    assert lock and lock[0]["still_locked"] and lock[0]["failures"] == ACCOUNT_CEILING
    assert datetime.fromisoformat(lock[0]["until"]) > datetime.now(timezone.utc) + timedelta(minutes=14)

    # Auditors replay the account's history; another tenant's auditor finds no such account.
    auditor, stranger = accounts.new("auditor", admin.tenant_id), accounts.new("auditor")
    history = http.get(f"/security/accounts/{person['account_id']}/events", headers=auditor, params={"limit": 1000})
    assert history.status_code == 200, history.text
    types = [e["type"] for e in history.json()["events"]]
    assert types[:2] == ["Account.Registered", "Account.RoleGranted"] and "Account.Locked" in types
    assert http.get(f"/security/accounts/{person['account_id']}/events", headers=stranger).status_code == 404
    assert http.post(f"/accounts/{person['account_id']}/unlock", headers=auditor).status_code == 403
    assert http.post(f"/accounts/{person['account_id']}/unlock", headers=admin).status_code == 200
    assert login(http, person, client=client_ip()).status_code == 200


def test_usernames_are_per_tenant_and_creating_one_reveals_no_other_tenant(http, admin, accounts):
    other_admin = accounts.new("admin")
    taken = make_person(http, other_admin)
    body = {"username": taken["username"], "password": "a long passphrase here", "roles": []}
    mine = http.post("/accounts", headers=admin, json=body)
    assert mine.status_code == 201, mine.text                     # another tenant's username: no trace of it
    again = http.post("/accounts", headers=admin, json=body)
    assert again.status_code == 409 and again.json()["field"] == "username"  # only one's own tenant's
    same_name = {**taken, "tenant": admin.tenant_id, "password": "a long passphrase here"}
    assert login(http, same_name).json()["access_token"]
    assert login(http, taken).json()["access_token"]              # each logs in to its own tenant
    missing = http.post("/auth/login", json={"username": taken["username"], "password": taken["password"]})
    assert missing.status_code == 422 and missing.json()["field"] == "tenant"


# -- rate limits --------------------------------------------------------------------------------
def test_login_and_token_endpoints_are_rate_limited_per_client(base_url):
    ip = client_ip()
    with httpx.Client(base_url=base_url, headers={"X-Forwarded-For": ip}) as client:
        answers = [client.post("/auth/login", json={"tenant": "t", "username": "nobody-at-all",
                                                    "password": "whatever it is"}) for _ in range(11)]
        assert [a.status_code for a in answers] == [401] * 10 + [429]
        assert 1 <= int(answers[-1].headers["retry-after"]) <= 60
        assert answers[-1].headers["content-type"] == "application/problem+json"
        # The second factor shares the login budget; the token endpoint has its own.
        assert client.post("/auth/login/mfa", json={"challenge": "x", "code": "123456"}).status_code == 429
        refreshes = [client.post("/auth/token", json={"refresh_token": "rt_nonsense"}).status_code for _ in range(31)]
        assert refreshes == [401] * 30 + [429]
    # Another client is not affected.
    with httpx.Client(base_url=base_url, headers={"X-Forwarded-For": client_ip()}) as other:
        assert other.post("/auth/login", json={"tenant": "t", "username": "nobody-at-all",
                                               "password": "whatever it is"}).status_code == 401


# -- access tokens that must be refused ---------------------------------------------------------
def _claims(tenant) -> dict:
    now = datetime.now(timezone.utc)
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": tenant.account_id, "tid": tenant.tenant_id,
            "sid": jwt.decode(tenant["Authorization"].split()[1], options={"verify_signature": False})["sid"],
            "iat": now, "exp": now + timedelta(minutes=5)}


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, default=str).encode()).rstrip(b"=").decode()


def test_tampered_expired_misaddressed_and_unsigned_tokens_are_refused(http, engine, tenant):
    key = engine.identity.secrets.jwt_key
    good = jwt.encode(_claims(tenant), key, algorithm=ALGORITHM)
    assert http.get("/auth/me", headers=bearer(good)).status_code == 200  # the forger's baseline works

    header, payload, signature = good.split(".")
    elevated = {**_claims(tenant), "sub": str(uuid.uuid4())}
    claims = _claims(tenant)
    now = datetime.now(timezone.utc)
    forged = {
        "tampered payload": f"{header}.{_b64({**elevated, 'iat': int(now.timestamp()), 'exp': int(now.timestamp()) + 300})}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}",
        "expired": jwt.encode({**claims, "iat": now - timedelta(hours=1), "exp": now - timedelta(minutes=5)}, key, ALGORITHM),
        "wrong audience": jwt.encode({**claims, "aud": "some-other-api"}, key, ALGORITHM),
        "wrong issuer": jwt.encode({**claims, "iss": "someone-else"}, key, ALGORITHM),
        "no expiry": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, key, ALGORITHM),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'iat': int(now.timestamp()), 'exp': int(now.timestamp()) + 300})}.",
        "other key": jwt.encode(claims, Secrets.ephemeral().jwt_key, ALGORITHM),
        "other algorithm": jwt.encode(claims, key, "HS512"),
        "garbage": "not-a-token",
        "unknown api key": "ek_" + "x" * 43,
    }
    for name, token in forged.items():
        response = http.get("/auth/me", headers=bearer(token))
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert http.get("/auth/me", headers={"Authorization": f"Basic {good}"}).status_code == 401


# -- TOTP ---------------------------------------------------------------------------------------
def test_the_full_mfa_flow_with_replay_and_recovery_codes(http, admin, database_url):
    person = make_person(http, admin)
    session = tokens(http, person)
    enrolled = http.post("/auth/mfa/enroll", headers=bearer(session["access_token"]))
    assert enrolled.status_code == 200, enrolled.text
    enrolled = enrolled.json()
    assert enrolled["otpauth_uri"].startswith("otpauth://totp/") and enrolled["qr_svg"].startswith("data:image/svg+xml")
    totp = pyotp.TOTP(enrolled["secret"])
    assert totp.provisioning_uri(name=person["username"], issuer_name="EtsyPro Pricing") == enrolled["otpauth_uri"]

    bad = http.post("/auth/mfa/confirm", headers=bearer(session["access_token"]),
                    json={"code": f"{(int(totp.now()) + 1) % 1_000_000:06d}"})
    assert bad.status_code == 422 and bad.json()["field"] == "code"
    confirmed = http.post("/auth/mfa/confirm", headers=bearer(session["access_token"]), json={"code": totp.now()})
    assert confirmed.status_code == 200, confirmed.text
    recovery = confirmed.json()["recovery_codes"]
    assert len(recovery) == 10 and len(set(recovery)) == 10

    # The password alone no longer gives tokens: it gives a challenge.
    step1 = tokens(http, person)
    assert step1["mfa_required"] is True and "access_token" not in step1
    # The current step's code was spent on confirmation; the next step's (within ±1) is fresh.
    code = totp.at(time.time() + 30)
    done = http.post("/auth/login/mfa", json={"challenge": step1["challenge"], "code": code})
    assert done.status_code == 200, done.text
    assert http.get("/auth/me", headers=bearer(done.json()["access_token"])).json()["mfa"] == "confirmed"

    # Replay: the same code on a new challenge is refused, and so is a code from further back.
    replay = http.post("/auth/login/mfa", json={"challenge": tokens(http, person)["challenge"], "code": code})
    assert_refused(replay)
    assert_refused(http.post("/auth/login/mfa", json={"challenge": tokens(http, person)["challenge"],
                                                      "code": totp.at(time.time() - 30)}))
    # A challenge is single use.
    assert_refused(http.post("/auth/login/mfa", json={"challenge": step1["challenge"], "code": code}))

    # A recovery code works once.
    challenge = tokens(http, person)["challenge"]
    assert http.post("/auth/login/mfa", json={"challenge": challenge, "recovery_code": recovery[0]}).status_code == 200
    assert_refused(http.post("/auth/login/mfa", json={"challenge": tokens(http, person)["challenge"],
                                                      "recovery_code": recovery[0]}))

    events = events_of(database_url, person["account_id"])
    names = [n for n, _ in events]
    assert "MfaEnrolled" in names and "MfaConfirmed" in names
    reasons = [(d["action"], d["reason"]) for n, d in events if n == "LoginFailed"]
    assert reasons == [("confirm_mfa", "bad_mfa_code"), ("login", "mfa_code_replayed"), ("login", "mfa_code_replayed"),
                       ("login", "bad_recovery_code")]
    methods = [d["method"] for n, d in events if n == "LoginSucceeded"]
    assert methods[-2:] == ["password+totp", "password+recovery_code"]

    # An admin can remove a lost device; the password alone works again.
    assert http.post(f"/accounts/{person['account_id']}/mfa/reset", headers=admin).status_code == 200
    assert "access_token" in tokens(http, person)


def test_a_wrong_second_factor_counts_towards_the_clients_budget(http, admin):
    person, guesser = make_person(http, admin), client_ip()
    session = tokens(http, person)
    secret = http.post("/auth/mfa/enroll", headers=bearer(session["access_token"])).json()["secret"]
    http.post("/auth/mfa/confirm", headers=bearer(session["access_token"]), json={"code": pyotp.TOTP(secret).now()})
    for _ in range(CLIENT_FREE_FAILURES):
        challenge = login(http, person).json()["challenge"]  # the password, known from elsewhere
        assert_refused(http.post("/auth/login/mfa", headers=from_client(guesser),
                                 json={"challenge": challenge, "code": "000000"}))
    assert_refused(login(http, person, client=guesser))  # this client waits now
    assert login(http, person).json()["mfa_required"]     # others do not


# -- administration -----------------------------------------------------------------------------
def test_an_admin_manages_only_their_own_tenant(http, admin, accounts):
    seller = accounts.new("seller", admin.tenant_id)
    shop = http.post("/shops", headers=seller, json={"name": "A's shop", "currency": "GBP"}).json()["shop_id"]
    other_admin = accounts.new("admin")
    for method, path, body in [("GET", f"/accounts/{seller.account_id}", None),
                               ("POST", f"/accounts/{seller.account_id}/unlock", None),
                               ("POST", f"/accounts/{seller.account_id}/roles", {"role": "analyst", "shops": None}),
                               ("DELETE", f"/accounts/{seller.account_id}/roles/seller", None),
                               ("GET", f"/security/accounts/{seller.account_id}/events", None)]:
        response = http.request(method, path, headers=other_admin, json=body)
        assert response.status_code == 404, (method, path, response.text)
    stolen = http.post("/accounts", headers=other_admin, json={
        "username": f"thief-{uuid.uuid4().hex[:6]}", "password": "a long passphrase here",
        "roles": [{"role": "seller", "shops": [shop]}]})
    assert stolen.status_code == 422 and stolen.json()["field"] == "shops[0]", stolen.text
    assert seller.account_id not in str(http.get("/accounts", headers=other_admin).json())

    # Within the tenant: an analyst over one shop, then revoked.
    analyst = make_person(http, admin, role="analyst", shops=[shop])
    analyst_token = bearer(tokens(http, analyst)["access_token"])
    assert http.get(f"/shops/{shop}", headers=analyst_token).status_code == 200
    assert http.put(f"/shops/{shop}/listings/{uuid.uuid4()}/price", headers=analyst_token,
                    json={"price": "1.00", "currency": "GBP"}).status_code == 403
    assert http.delete(f"/accounts/{analyst['account_id']}/roles/analyst", params={"shop_id": shop},
                       headers=admin).status_code == 200
    assert http.get(f"/shops/{shop}", headers=analyst_token).status_code == 404  # at once, same token


def test_a_shops_first_tenancy_check_queries_off_the_event_loop(api, engine, monkeypatch):
    """Every route of a shop checks the shop's tenant. Known shops answer from memory on the event
    loop; a shop this process has not seen yet is read from the store, and that query must run in
    the threadpool, or it stalls every other request of the worker meanwhile."""
    import asyncio

    shop = api.post("/shops", json={"name": "Fresh", "currency": "GBP"}).json()["shop_id"]
    calls, lookup = [], engine.core.shop_facts

    def watched(ctx, shop_id):
        known = engine.core.knows_shop(shop_id)
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        calls.append((known, on_loop))
        return lookup(ctx, shop_id)

    monkeypatch.setattr(engine.core, "shop_facts", watched)
    monkeypatch.setattr(engine.core, "_shops", {})  # as in a worker that has not served this shop yet
    for _ in range(2):
        assert api.get(f"/shops/{shop}").status_code == 200
    assert (False, True) not in calls, calls  # no query on the loop
    assert (False, False) in calls and (True, True) in calls  # it queried once, then answered from memory
