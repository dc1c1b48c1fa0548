"""How well the bot overlaps slow image generations: N concurrent /generate, each backend call taking L seconds.

The real bot (`ImageCreditsBot`) runs against the fake Discord of the test suite (REST + gateway on 127.0.0.1,
in this process) with a temporary SQLite database and the placeholder backend delayed by L seconds. N members
each send one /generate at once; the wall time runs from the first interaction pushed down the gateway to the
last PNG received by the fake Discord. With a global cap of 50, N = 50 should take about L: the target is
wall/L <= 1.3. Beside it: the Discord REST calls the bot made per generation (interaction callbacks, webhook
edits and followups, failed ones included; the fake enforces Discord's rules and rate limits). Peak RSS is the
whole process (bot, fake Discord, Django), from getrusage.

    .venv/bin/python bench/bot_concurrency.py [--latency 2] [--n 1 10 50] [--cap 50] [--database-url URL]
"""

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup_django(*, database_url: str, latency: float, cap: int) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "storefront.settings",
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-not-a-secret",
            "DATABASE_URL": database_url,
            "IMAGE_BACKEND": "placeholder",
            "PLACEHOLDER_DELAY_SECONDS": str(latency),
            "MAX_CONCURRENT_GENERATIONS": str(cap),
            "GENERATIONS_PER_MEMBER": "1",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _count(fake, tokens: set[str], route: str, *, uploads: bool = False) -> int:
    return sum(1 for c in fake.calls if c.token in tokens and c.route == route and (bool(c.uploads) or not uploads))


async def run_rounds(rounds: list[list[int]]) -> list[tuple[int, float, float, float]]:
    """Each round: every member in it sends one /generate at once.
    Returns (N, wall seconds, slowest deferral, Discord REST calls per generation)."""
    import discord.gateway
    import discord.http

    from discordbot.bot import ImageCreditsBot
    from discordbot.bridge import close_db_connections
    from tests.discordbot.fake_discord import FakeDiscord

    fake = FakeDiscord()
    await fake.start()
    # The same test-side redirect as the test suite: discord.py's two base URLs, nothing else.
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = fake.gateway_url
    bot = ImageCreditsBot()
    bot_task = asyncio.create_task(bot.start("bench-token"))
    await fake.wait_for_async(lambda: fake.identifies, timeout=30)

    results = []
    try:
        for users in rounds:
            n = len(users)
            start = time.perf_counter()
            sents = [
                await fake.send_command("generate", user_id=user, options={"prompt": f"bench image {i}"})
                for i, user in enumerate(users)
            ]
            tokens = {sent.token for sent in sents}

            def answered(tokens: set[str] = tokens, n: int = n) -> bool:
                return _count(fake, tokens, "edit_message", uploads=True) + _count(fake, tokens, "followup") >= n

            await fake.wait_for_async(answered, timeout=300)
            wall = time.perf_counter() - start
            images = _count(fake, tokens, "edit_message", uploads=True)
            if images != n:
                raise SystemExit(f"N={n}: only {images} images; the rest were refused or failed")
            deferred_at = {c.token: c.at for c in fake.calls if c.route == "callback" and c.token in tokens}
            slowest_deferral = max(deferred_at[sent.token] - sent.at for sent in sents)
            rest_calls = sum(1 for c in fake.calls if c.token in tokens)
            results.append((n, wall, slowest_deferral, rest_calls / n))
            await asyncio.sleep(0.2)  # let the round's last successes be recorded before the next one
    finally:
        await bot.close()
        await asyncio.wait_for(bot_task, 10)
        await close_db_connections()
        await fake.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=2.0, help="seconds each image takes at the backend (L)")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 10, 50], help="concurrent /generate per round")
    parser.add_argument("--cap", type=int, default=50, help="MAX_CONCURRENT_GENERATIONS")
    parser.add_argument("--database-url", default="", help="default: a temporary SQLite file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bot-bench-") as tmp:
        setup_django(
            database_url=args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}",
            latency=args.latency,
            cap=args.cap,
        )
        from django.db import connection

        from discordbot.models import Generation
        from vouchers.audit import audit_credits
        from vouchers.services import credits_grant

        rounds: list[list[int]] = []
        next_id = 500_000_000_000_000_001 + int(time.time())  # fresh members even on a reused --database-url
        for n in [1, *args.n]:  # a warm-up round of one first, not reported
            rounds.append(list(range(next_id, next_id + n)))
            next_id += n
        for users in rounds:
            for user in users:
                credits_grant(discord_user_id=user, amount=1, memo="bench")
        connection.close()

        results = asyncio.run(run_rounds(rounds))[1:]

        delivered = Generation.objects.filter(
            status=Generation.Status.SUCCEEDED, account__discord_user_id__in=[u for r in rounds for u in r]
        ).count()
        broken = [name for name, problems in audit_credits().items() if problems]
        engine = connection.vendor
        connection.close()

    print(f"bot_concurrency: placeholder backend, L = {args.latency:g} s, cap = {args.cap}, {engine}")
    print(f"{'N':>4}  {'wall (s)':>9}  {'wall/L':>7}  {'REST calls/gen':>14}  {'slowest deferral (ms)':>22}")
    for n, wall, deferral, calls in results:
        print(f"{n:>4}  {wall:>9.3f}  {wall / args.latency:>7.3f}  {calls:>14.2f}  {deferral * 1000:>22.1f}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak RSS: {peak_mib:.0f} MiB (bot + fake Discord + Django, one process; {os.cpu_count()} CPUs)")
    print(f"images delivered: {delivered}; auditcredits: {'ok' if not broken else 'BROKEN: ' + ', '.join(broken)}")


if __name__ == "__main__":
    main()
