"""The pricing benchmark runs end to end at a tiny scale and reports every figure.

Only the shape and the bookkeeping are checked: performance is never asserted in tests."""

import json

from api.cli import main


def test_bench_pricing_reports_every_figure(capsys):
    status = main(["bench", "pricing", "--json", "--evaluations", "600", "--reprices", "12"])

    assert status == 0
    figures = json.loads(capsys.readouterr().out)
    for key in ("rule_evals_per_s", "decisions_per_s"):
        assert isinstance(figures[key], int) and figures[key] > 0, key
    for key in ("reprice_p50_ms", "reprice_p95_ms", "reprice_p99_ms", "reprice_max_ms"):
        assert isinstance(figures[key], float) and figures[key] > 0, key
    # Every observation moved its listing's price, and each change was timed.
    assert (figures["reprices_measured"], figures["reprices_missed"]) == (12, 0)
    assert figures["reprice_p50_ms"] <= figures["reprice_p95_ms"] <= figures["reprice_max_ms"]
