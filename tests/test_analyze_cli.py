"""`etsypro analyze`: the estimator on an analyst's CSV (good tables answer, bad ones exit 2 naming
the column, never a traceback), `analyze refresh` and the stored answers on a real database, and the
two-process fit giving the same answers as the one-process fit."""

from __future__ import annotations

import json
import os
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from api.app import create_app
from api.cli import parser
from api.server import running
from bench.demand_shops import REALISTIC, shop as synthetic_shop
from commands.engine import PricingEngine
from conftest import ROOT, Accounts
from domain.demand.elasticity import Estimate, Refusal, estimate_shop
from read import model_runs
from test_demand_http import TRUE_ELASTICITY, project, record_history


def analyze(*argv: str) -> int:
    """The command in this process (its output goes to capsys)."""
    args = parser().parse_args(["analyze", *argv])
    return args.func(args)


def write_table(path: Path, rows: dict) -> str:
    pl.DataFrame(rows).write_csv(path)
    return str(path)


def demand_table(n: int = 90, elasticity: float = -1.5, seed: int = 3) -> dict:
    """Daily rows: three prices in turn, Poisson units at a constant elasticity, a weekday pattern."""
    rng = np.random.default_rng(seed)
    days = pl.date_range(pl.date(2025, 1, 6), pl.date(2025, 1, 5) + pl.duration(days=n), eager=True)
    price = np.array([9.0, 10.0, 11.5])[(np.arange(n) // 4) % 3]
    units = rng.poisson(20 * (price / 10) ** elasticity * (1 + 0.2 * (np.arange(n) % 7 >= 5)))
    return {"day": days.dt.to_string("%Y-%m-%d"), "price": price, "sold": units, "promo": rng.integers(0, 2, n)}


# -- an analyst's table ------------------------------------------------------------------------------
def test_a_good_table_prints_the_estimate_interval_n_method_and_diagnostics(tmp_path, capsys):
    table = write_table(tmp_path / "sales.csv", demand_table())
    assert analyze("elasticity", "--csv", table, "--price", "price", "--quantity", "sold", "--date", "day") == 0
    text = capsys.readouterr().out
    for part in ("elasticity", "95% interval", "n 90 rows", "method", "diagnostics", "experiment"):
        assert part in text, text
    assert analyze("elasticity", "--csv", table, "--price", "price", "--quantity", "sold", "--date", "day",
                   "--controls", "promo", "--json") == 0
    answer = json.loads(capsys.readouterr().out, parse_constant=lambda token: pytest.fail(token))
    low, high = answer["ci95"]
    assert answer["refused"] is False and low < -1.5 < high and answer["n_days"] == 90
    assert "promo" in answer["controls"] and answer["diagnostics"]["converged"] is True


BAD_TABLES = [  # (what, rows or None for no file, extra arguments, the column or text the message names)
    ("missing file", None, [], "cannot read"),
    ("missing price column", {"cost": [1.0, 2.0], "sold": [1, 2]}, [], "'price'"),
    ("missing quantity column", {"price": [1.0, 2.0], "units": [1, 2]}, [], "'sold'"),
    ("non-numeric prices", {"price": ["9.00", "ten"], "sold": [1, 2]}, [], "'price'"),
    ("non-positive prices", {"price": [9.0, 0.0, -1.0], "sold": [1, 2, 3]}, [], "'price'"),
    ("non-numeric quantities", {"price": [9.0, 10.0], "sold": ["a", "b"]}, [], "'sold'"),
    ("missing date column", {"price": [9.0, 10.0], "sold": [1, 2]}, ["--date", "when"], "'when'"),
    ("dates that are not dates", {"price": [9.0, 10.0], "sold": [1, 2], "day": ["soon", "later"]}, ["--date", "day"],
     "'day'"),
    ("one price only", {"price": [9.0] * 40, "sold": [3] * 40}, [], "'price'"),
    ("empty file", {}, [], "cannot read"),
]


@pytest.mark.parametrize("what,rows,extra,named", BAD_TABLES, ids=[case[0] for case in BAD_TABLES])
def test_a_bad_table_exits_2_with_a_message_naming_the_column(tmp_path, capsys, what, rows, extra, named):
    path = tmp_path / "table.csv"
    if rows is not None:
        if rows:
            write_table(path, rows)
        else:
            path.write_text("")
    code = analyze("elasticity", "--csv", str(path), "--price", "price", "--quantity", "sold", *extra)
    out, err = capsys.readouterr()
    assert code == 2 and named in err, err
    assert "Traceback" not in out + err


def test_the_table_needs_its_columns_named(tmp_path, capsys):
    table = write_table(tmp_path / "sales.csv", demand_table())
    assert analyze("elasticity", "--csv", table, "--price", "price") == 2
    assert "--quantity" in capsys.readouterr().err
    assert analyze("forecast") == 2 and "--shop" in capsys.readouterr().err


# -- a shop's stored runs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def refreshed_shop(new_database):
    """A shop with history, projected, then refreshed by `etsypro analyze refresh` in its own process."""
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    seller = Accounts(engine).new("seller")
    try:
        with running(create_app(engine)) as base, httpx.Client(base_url=base, headers=seller, timeout=60) as api:
            shop = api.post("/shops", json={"name": "Cli Ceramics", "currency": "GBP"}).json()["shop_id"]
            varied, steady = record_history(engine, api, shop, seller.tenant_id)
    finally:
        engine.close()
    project(url)
    done = subprocess.run([sys.executable, "-m", "api.cli", "analyze", "refresh", "--shop", shop],
                          env={**os.environ, "ETSYPRO_DATABASE_URL": url}, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return url, shop, varied, steady, done.stdout


def test_refresh_reports_what_it_wrote(refreshed_shop):
    *_, shop, _, _, out = refreshed_shop
    assert f"{shop}: 2 listings, 8 runs" in out and "refused:" in out and "window" in out
    assert "optimise-profit listings: 0 repriced" in out  # none of its listings follows the model runs


def test_the_stored_answers_print_as_tables_or_the_api_json(refreshed_shop, capsys, monkeypatch):
    url, shop, varied, steady, _ = refreshed_shop
    monkeypatch.setenv("ETSYPRO_DATABASE_URL", url)
    assert analyze("elasticity", "--shop", shop) == 0
    table = capsys.readouterr().out
    assert varied in table and "95% [" in table and f"{steady}  refused: 1 distinct price" in table
    assert analyze("elasticity", "--shop", shop, "--listing", varied, "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["estimate"]["ci95"][0] < TRUE_ELASTICITY < answer["estimate"]["ci95"][1]
    assert analyze("forecast", "--shop", shop, "--listing", varied, "--horizon", "5", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)["forecast"]["points"]) == 5
    assert analyze("forecast", "--shop", shop, "--horizon", "3") == 0  # the shop's total
    assert "backtest MASE" in capsys.readouterr().out
    assert analyze("recommend", "--shop", shop) == 0
    assert "per day +" in capsys.readouterr().out
    assert analyze("recommend", "--shop", shop, "--listing", steady.replace(steady[:8], "00000000")) == 1
    assert "analyze refresh" in capsys.readouterr().err


# -- fitting ---------------------------------------------------------------------------------------
def test_the_refresh_composes_the_shops_elasticities_as_estimate_shop_does():
    """Own fits, thin fits shrunk toward the pooled slope, refusals: the refresh builds them from the
    module's public parts (so processes can share the listings) and must answer what estimate_shop answers."""
    rich = synthetic_shop(5, (-0.5, -1.5, -3.0, -1.0, -2.0, -1.2, -2.5))
    thin = synthetic_shop(6, (-1.0, -2.0, -1.5, -0.8), replace(REALISTIC, days=20, mean_units=(0.5, 2.0)))
    frame = pl.concat([rich, thin, synthetic_shop(7, (-1.0,), replace(REALISTIC, price_levels=1))])
    expected = estimate_shop(frame)
    assert sum(isinstance(e, Estimate) and e.own_weight is not None for e in expected.listings.values()) >= 2
    assert any(isinstance(e, Refusal) for e in expected.listings.values())
    assert model_runs.fit(frame, "GBP", processes=1).elasticities == expected


def test_fitting_in_two_processes_gives_the_answers_of_one(monkeypatch):
    frame = synthetic_shop(11, (-0.5, -1.5, -3.0, -1.0, -2.0, -1.2))
    alone = model_runs.fit(frame, "GBP", processes=1)
    monkeypatch.setattr(model_runs, "POOL_MIN_LISTINGS", 0)
    monkeypatch.setattr(model_runs, "LISTING_CHUNK", 2)  # several fitting tasks of each kind
    seen = []
    shared = model_runs.fit(frame, "GBP", processes=2, progress=seen.append)
    assert shared == alone
    assert seen == sorted(seen) and seen[-1] == 2 * frame["listing_id"].n_unique()
