"""CPU per call of the database services on the bot's per-image path, as a database thread of the bot spends it
(that thread holds the GIL against the event loop, so this CPU is what N concurrent requests queue behind).

A temporary SQLite file, N members with an account each, one active bot lease; each service runs N times in a row
and the process CPU time (time.process_time) is divided by N. CPU, not wall time, so a loaded machine changes the
figures less; still, compare checkouts side by side in one run:

    .venv/bin/python bench/bot_services_cpu.py [--n 200] [--reps 3] [--compare PATH]

--compare PATH runs the same measurement with another checkout's code (for instance a `git worktree add` of the
base commit), rep by rep; each rep of each checkout runs in a fresh process. The services are called as the bot
calls them for a `/generate` in a server without settings (the server-rules check, the member's /settings, the
reservation, delivering, succeeded, the member's name).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
GUILD = 55
CHANNEL = 1


def _child(n: int) -> dict[str, float]:
    directory = tempfile.mkdtemp(prefix="bot-services-cpu-")
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "storefront.settings",
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-not-a-secret",
            "DATABASE_URL": f"sqlite:///{directory}/db.sqlite3",
            "IMAGE_BACKEND": "placeholder",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    from discordbot import services
    from discordbot.guilds import guild_request_check
    from discordbot.models import BotProcess
    from vouchers.models import CreditAccount
    from vouchers.services import account_get_or_create

    users = list(range(10**17, 10**17 + n))
    for user in users:
        account = account_get_or_create(discord_user_id=user)
        CreditAccount.objects.filter(pk=account.pk).update(balance=50)
    now = timezone.now()
    BotProcess.objects.create(identity="bench", active=True, expires_at=now + timedelta(hours=1), heartbeat_at=now)
    figures: dict[str, float] = {}

    def timed(name, call):
        started = time.process_time()
        out = [call(user) for user in users]
        figures[name] = 1000 * (time.process_time() - started) / n
        return out

    timed(
        "server rules check",
        lambda u: guild_request_check(guild_id=GUILD, channel_ids=[CHANNEL], discord_user_id=u, role_ids=[]),
    )
    timed("member settings", lambda u: services.member_settings_get(discord_user_id=u))
    reservations = timed(
        "reservation",
        lambda u: services.generation_reserve(
            discord_user_id=u,
            prompt="a cat",
            model="placeholder",
            owner="bench",
            interaction_id=u,
            guild_id=GUILD,
            channel_id=CHANNEL,
            start=True,
        ),
    )
    ids = iter([r.generation_id for r in reservations])
    timed(
        "delivering",
        lambda u: services.generation_deliver_begin(
            generation_id=next(ids), owner="bench", message_id=u, lease_margin=60
        ),
    )
    ids = iter([r.generation_id for r in reservations])
    timed("succeeded", lambda u: services.generation_succeed(generation_id=next(ids), message_id=u))
    timed("member name", lambda u: services.member_name_seen(discord_user_id=u, name=f"member {u}"))
    figures["per image"] = sum(figures.values())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--compare", type=Path, help="another checkout's root, run beside this one")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        sys.path.insert(0, str(args.child))
        os.chdir(args.child)
        print(json.dumps(_child(args.n)))
        return
    checkouts = {"this": ROOT}
    if args.compare is not None:
        checkouts = {args.compare.resolve().name: args.compare.resolve(), "this": ROOT}
    print(
        f"bot_services_cpu: SQLite, N = {args.n} calls each, {args.reps} reps; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    results: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    for _ in range(args.reps):
        for name, root in checkouts.items():
            out = subprocess.run(
                [sys.executable, str(HERE), "--n", str(args.n), "--child", str(root)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
    services = list(results["this"][0])
    print(f"{'ms CPU per call (median)':28}" + "".join(f"{name:>18}" for name in checkouts))
    for service in services:
        row = "".join(f"{statistics.median(r[service] for r in results[name]):18.2f}" for name in checkouts)
        print(f"{service:28}{row}")
    print("after the runs: load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
