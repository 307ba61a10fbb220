"""The write benchmark runs end to end at a tiny scale and reports every figure.

Only the shape and the bookkeeping are checked: performance is never asserted in tests."""

import json

from api.cli import main

FIGURES = ("ingest_events_per_s", "ingest_events_per_s_one_client", "copy_rows_per_s", "ingest_vs_copy", "command_rps", "command_p50_ms",
           "command_p99_ms", "load_ms_100", "load_ms_100k")


def test_bench_write_reports_every_figure_as_a_positive_number(capsys):
    status = main(["bench", "write", "--json", "--events", "300", "--batch", "100", "--ingest-clients", "2", "--commands", "40",
                   "--clients", "2", "--large", "300"])

    assert status == 0
    figures = json.loads(capsys.readouterr().out)
    for key in FIGURES:
        assert isinstance(figures[key], float) and figures[key] > 0, key
    assert figures["ingest_events"] == 300 + 3  # every observation, plus each batch's Received event
    assert figures["ingest_clients"] == 2
    assert figures["copy_rows"] == figures["ingest_events"]  # COPY wrote exactly the rows ingest stored
    assert figures["command_requests"] == 40
    assert figures["command_p50_ms"] <= figures["command_p99_ms"]
    assert figures["load_observations_large"] == 300
    assert figures["server_cpu_ms_per_request"] > 0
    shares = figures["server_worker_cpu_shares"]  # the default: a worker per core (2 here)
    assert len(shares) == figures["server_workers"] and abs(sum(shares) - 1) < 0.01
