"""Keeps bench/bot_concurrency.py runnable: its `make bench` entry point, on a small input (no timings asserted)."""

from bench import bot_concurrency


def test_quick_measure_gives_a_row_per_workload_with_every_image_delivered_and_a_clean_audit():
    # measure() raises SystemExit when a request was not delivered or auditcredits finds a problem.
    rows = bot_concurrency.measure(quick=True)
    assert [row.what.split(",")[0] for row in rows] == [
        "3 concurrent /generate",
        "3 concurrent /generate",
        "3 concurrent /edit (one picture)",
        "3 concurrent /generate count:4",
    ]
    for row in rows:
        assert row.figure.startswith("wall/L ")
        assert "REST calls per request" in row.beside
        assert "auditcredits clean" in row.settings and "placeholder backend" in row.settings
