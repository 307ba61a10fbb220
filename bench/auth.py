"""`etsypro bench auth`: what a login costs.

Logs in over real HTTP (POST /auth/login against a uvicorn server on a fresh database), round
robin over several accounts, and reports p50/p99 latency next to the argon2 verify alone, with
the argon2 parameters that decide most of it. Also: an unknown user's answer time, which must
match a wrong password's (no account enumeration by timing).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from uuid import uuid4

import httpx

from api.app import create_app
from api.auth import AuthSettings
from api.progress import Progress
from api.server import running
from bench.common import (fresh_database, median, note, percentile, print_table, server_version,
                          show, sizes_from)
from commands import credentials
from commands.context import CommandContext
from commands.engine import PricingEngine
from domain.meta import Actor


@dataclass(frozen=True)
class Sizes:
    logins: int = 300        # measured successful logins
    accounts: int = 20       # logins go round robin over these
    verifies: int = 100      # argon2 verifies measured alone
    misses: int = 40         # unknown-user and wrong-password attempts, each


def _accounts(engine: PricingEngine, count: int) -> list[dict]:
    """Login bodies of `count` new accounts of one tenant."""
    ctx = CommandContext(actor=Actor("bench"), tenant_id=f"bench-auth-{uuid4().hex[:8]}")
    made = []
    for i in range(count):
        username, password = f"bench-{uuid4().hex[:10]}", f"bench passphrase {uuid4().hex}"
        engine.identity.create_account(ctx, username, "user", password, {"seller": []})
        made.append({"tenant": ctx.tenant_id, "username": username, "password": password})
    return made


def _timed_posts(http: httpx.Client, bodies: list[dict], expect: int, progress: Progress | None = None) -> list[float]:
    latencies = []
    for i, body in enumerate(bodies):
        started = time.perf_counter()
        response = http.post("/auth/login", json=body)
        latencies.append(time.perf_counter() - started)
        if response.status_code != expect:
            raise RuntimeError(f"login answered {response.status_code}, expected {expect}: {response.text}")
        if progress:
            progress.update(i + 1)
    return latencies


def measure_verify(count: int) -> list[float]:
    stored = credentials.hash_password("a passphrase to verify")
    times = []
    for _ in range(count):
        started = time.perf_counter()
        credentials.verify_password("a passphrase to verify", stored)
        times.append(time.perf_counter() - started)
    return times


def run(sizes: Sizes = Sizes()) -> dict:
    with fresh_database("etsypro_bench_auth") as (url, where):
        engine = PricingEngine(url)
        try:
            accounts = _accounts(engine, sizes.accounts)
            # The rate limit would stop a benchmark from one address; lockout is not involved.
            app = create_app(engine, auth_settings=AuthSettings(login_per_minute=10**9))
            with running(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as http:
                good = accounts
                _timed_posts(http, good[:5], 200)  # warm-up: connections, caches, the dummy hash
                note(f"{sizes.logins} logins over HTTP ...")
                logins = _timed_posts(http, [good[i % len(good)] for i in range(sizes.logins)], 200,
                                      Progress("logins", sizes.logins))
                unknown = _timed_posts(http, [{**good[0], "username": f"nobody-{i}", "password": "x" * 12}
                                              for i in range(sizes.misses)], 401)
                # Wrong passwords spread so that no account makes this client wait (4 misses each at most).
                wrong_bodies = [{**accounts[i % len(accounts)], "password": "not it at all"}
                                for i in range(min(sizes.misses, 4 * len(accounts)))]
                wrong = _timed_posts(http, wrong_bodies, 401)
            verify = measure_verify(sizes.verifies)
        finally:
            engine.close()
        ms = 1000
        return {
            "login_p50_ms": median(logins) * ms,
            "login_p99_ms": percentile(logins, 99) * ms,
            "login_requests": len(logins),
            "verify_p50_ms": median(verify) * ms,
            "verify_p99_ms": percentile(verify, 99) * ms,
            "unknown_user_p50_ms": median(unknown) * ms,
            "wrong_password_p50_ms": median(wrong) * ms,
            "argon2": {"variant": "argon2id", "memory_kib": credentials.ARGON2["memory_cost"],
                       "time_cost": credentials.ARGON2["time_cost"], "parallelism": credentials.ARGON2["parallelism"]},
            "accounts": len(accounts),
            "database": where,
            "database_version": server_version(url),
            "cpus": os.cpu_count(),
        }


def report(f: dict) -> None:
    a = f["argon2"]
    print_table("Login (POST /auth/login over HTTP, argon2 verify included)", [
        ("login p50", f"{f['login_p50_ms']:.1f} ms", f"{f['login_requests']} logins over {f['accounts']} accounts"),
        ("login p99", f"{f['login_p99_ms']:.1f} ms", ""),
        ("argon2 verify p50", f"{f['verify_p50_ms']:.1f} ms",
         f"argon2id m={a['memory_kib']} KiB, t={a['time_cost']}, p={a['parallelism']}"),
        ("argon2 verify p99", f"{f['verify_p99_ms']:.1f} ms", ""),
        ("unknown user p50", f"{f['unknown_user_p50_ms']:.1f} ms", "answer 401, same body"),
        ("wrong password p50", f"{f['wrong_password_p50_ms']:.1f} ms", "answer 401, same body"),
    ])
    print(f"PostgreSQL {f['database_version']} ({f['database']}), {f['cpus']} CPUs")


def main(args) -> int:
    return show(run(sizes_from(args, Sizes)), args.json, report)
