"""A racer process for the concurrency tests: `python -m tests.vouchers.racer '<json plan>'`.

It sets Django up against the database named by DATABASE_URL (the parent's test database), opens its
connection, prints READY, waits for the start file so that every racer starts together, runs its plan and
prints one JSON line: the outcome of each step, either {"ok": value} or {"error": "module.Class", "message"}.
Every exception is reported, never swallowed, so the parent can assert that only domain errors happened.
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 60


def run_step(step: dict[str, Any], last_reservation: list[int]) -> dict[str, Any]:
    from vouchers import services

    service = step["service"]
    try:
        if service == "voucher_redeem":
            return {"ok": services.voucher_redeem(**step["kwargs"]).credits}
        if service == "credits_reserve":
            entry = services.credits_reserve(**step["kwargs"])
            last_reservation.append(entry.pk)
            return {"ok": entry.delta}
        if service == "credits_grant":
            return {"ok": services.credits_grant(**step["kwargs"]).delta}
        if service == "credits_refund":
            return {"ok": services.credits_refund(**step["kwargs"]).delta}
        if service == "refund_last_reservation":
            if not last_reservation:
                return {"ok": None}
            return {"ok": services.credits_refund(entry_id=last_reservation.pop()).delta}
        raise ValueError(f"unknown step {service!r}")
    except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent, by type
        return {"error": f"{type(exc).__module__}.{type(exc).__qualname__}", "message": str(exc)}


def main() -> None:
    plan = json.loads(sys.argv[1])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.db import connection, connections

    connection.ensure_connection()
    print("READY", flush=True)
    start_file = Path(plan["start_file"])
    deadline = time.monotonic() + START_TIMEOUT_S
    while not start_file.exists():
        if time.monotonic() > deadline:
            raise SystemExit("the start file never appeared")
        time.sleep(0.001)
    last_reservation: list[int] = []
    outcomes = [run_step(step, last_reservation) for step in plan["steps"]]
    connections.close_all()
    print(json.dumps(outcomes), flush=True)


if __name__ == "__main__":
    main()
