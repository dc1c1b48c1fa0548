"""How well the bot overlaps slow image generations: N members each send one request at once, and every backend
call takes L seconds.

The real bot (`ImageCreditsBot`) runs against the fake Discord of the test suite (REST + gateway on 127.0.0.1, in
the same process) with a temporary SQLite database (or --database-url) and the placeholder backend delayed by L
seconds. The wall time runs from the first interaction pushed down the gateway to the last image received by the
fake Discord. With a global cap of 50, N = 50 should take about L. Workloads:

    generate  /generate prompt                       (one image per request)
    edit      /edit prompt image                     (a PNG served by a local fake CDN, read by the bot)
    count4    /generate prompt count:4               (four images in one message)

Printed per workload and N: wall/L, the slowest initial response (deferral), the Discord REST calls the bot made per
request (callbacks, webhook edits and followups, failed ones included; the fake enforces Discord's rules and rate
limits) and the peak RSS of the process (bot + fake Discord + Django, from getrusage). Each (checkout, workload, L)
runs in a fresh process, so each peak RSS is its own. Members are never reused: each run starts above the largest
bench member already in the database, so repeated runs and a reused --database-url start from fresh accounts.

    .venv/bin/python bench/bot_concurrency.py [--workload generate edit count4] [--latency 2 1] [--n 1 10 50]
        [--reps 3] [--cap 50] [--database-url URL] [--compare PATH] [--profile]

--compare PATH runs the same workloads, interleaved rep by rep, with the bot of another checkout (for instance a
`git worktree add` of the base commit); the bench harness is this file in both cases. --profile prints a pyinstrument
summary of the event loop thread for the last run of each configuration of this checkout.

`make bench` uses measure() (TABLE_ORDER below): N = 50 at L = 2 and L = 1 for generate, and edit and count4 at L = 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
TABLE_ORDER = 50
WORKLOADS = ("generate", "edit", "count4")
BENCH_MEMBERS_FROM = 500_000_000_000_000_000  # bench members' Discord ids start above this
CREDITS_PER_MEMBER = 50  # enough for any workload's one request
# After a slow reservation (a private deferral first), the bot says this privately, then posts the image.
ACCEPTED = "Your request was accepted"


# --- the child: one checkout, one workload, one latency, in its own process -----------------------------------------


def _setup_django(*, database_url: str, latency: float, cap: int) -> None:
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
            "IMAGE_PREVIEW_PARTIALS": "0",
            "DISCORD_CDN_HOSTS": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _fresh_members(count: int) -> list[int]:
    """`count` Discord ids no bench run has used in this database (above the largest bench member so far)."""
    from django.db.models import Max

    from vouchers.models import CreditAccount

    top = CreditAccount.objects.filter(discord_user_id__gt=BENCH_MEMBERS_FROM).aggregate(top=Max("discord_user_id"))
    start = max(top["top"] or 0, BENCH_MEMBERS_FROM) + 1
    return list(range(start, start + count))


def _picture() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (512, 512), (40, 120, 200)).save(out, format="PNG")
    return out.getvalue()


# --- the fake Discord's process: Discord's REST API, gateway and CDN, and the one who times each round ----------------


async def _fake_discord_main() -> None:
    """Serve the fake Discord and CDN; on each `round` line from stdin, push the round's commands and print its
    figures. Its own process (as Discord is, for a real bot): its CPU, parsing the bot's uploads, is not the bot's."""
    from tests.discordbot.fake_cdn import FakeCDN
    from tests.discordbot.fake_discord import FakeDiscord

    fake = FakeDiscord()
    await fake.start()
    cdn = FakeCDN()
    await cdn.start()
    picture = _picture()
    picture_url = cdn.add("attachments/bench/photo.png", picture)
    print("BENCH-FAKE " + json.dumps({"api_base": fake.api_base, "gateway_url": str(fake.gateway_url)}), flush=True)
    loop = asyncio.get_running_loop()
    await fake.wait_for_async(lambda: fake.identifies, timeout=60)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        order = json.loads(line)
        if order["op"] != "round":
            break
        try:
            result = await _fake_round(fake, order["workload"], order["users"], picture, picture_url)
        except Exception as exc:  # reported to the bot's process, which stops the run with it
            result = {"error": f"{exc.__class__.__name__}: {exc}"}
        print("BENCH-ROUND " + json.dumps(result), flush=True)
    await cdn.stop()
    await fake.stop()


async def _fake_round(fake, workload: str, users: list[int], picture: bytes, picture_url: str) -> dict:
    """Push one round's commands at once and wait for every answer; the round's figures."""
    from tests.discordbot.fake_discord import Attachment

    images_per_request = 4 if workload == "count4" else 1

    def command(i: int, workload: str = workload) -> tuple[str, dict]:
        if workload == "edit":
            return "edit", {
                "prompt": f"bench edit {i}",
                "image": Attachment(picture_url, "photo.png", len(picture), width=512, height=512),
            }
        if workload == "count4":
            return "generate", {"prompt": f"bench image {i}", "count": 4}
        return "generate", {"prompt": f"bench image {i}"}

    n = len(users)
    # A loaded machine can make the bot's gateway reconnect between rounds: wait for it, never crash.
    await fake.wait_for_async(lambda: fake.connected, timeout=120)
    seen = len(fake.calls)
    start = time.perf_counter()
    sents = []
    for i, user in enumerate(users):
        name, options = command(i)
        sents.append(await fake.send_command(name, user_id=user, options=options))
    tokens = {sent.token for sent in sents}
    done: set[str] = set()

    def answered(tokens: set[str] = tokens, done: set[str] = done, n: int = n, per: int = images_per_request):
        nonlocal seen
        calls = fake.calls
        for call in calls[seen:]:
            if call.token in tokens and (
                len(call.uploads) >= per  # the image(s), however the message came about
                or (call.route == "followup" and call.ephemeral and not call.content.startswith(ACCEPTED))
                # no initial response within Discord's 3 s: the interaction is gone (the bot refunds it)
                or (call.route == "callback" and call.status == 404)
            ):
                done.add(call.token)
        seen = len(calls)
        return len(done) >= n

    await fake.wait_for_async(answered, timeout=300)
    wall = time.perf_counter() - start
    mine = [c for c in fake.calls if c.token in tokens]
    delivered = {c.token for c in mine if len(c.uploads) >= images_per_request}
    missed = {c.token for c in mine if c.route == "callback" and c.status == 404} - delivered
    deferred_at = {c.token: c.at for c in mine if c.route == "callback"}
    result = {
        "n": n,
        "wall": wall,
        "slowest_deferral": max(deferred_at[sent.token] - sent.at for sent in sents),
        "rest_per_request": len(mine) / n,
        "delivered": len(delivered),
        "missed_3s": len(missed),
        "refusals": [c.content for c in mine if c.route == "followup" and c.ephemeral][:3],
    }
    return result


# --- the bot's process ------------------------------------------------------------------------------------------


async def _read_tagged(stream: asyncio.StreamReader, tag: str) -> dict:
    while line := await stream.readline():
        text = line.decode()
        if text.startswith(tag + " "):
            return json.loads(text[len(tag) + 1 :])
    raise SystemExit(f"the fake Discord's process ended before sending {tag}")


async def _run_rounds(workload: str, rounds: list[list[int]], *, root: str, profile: bool) -> tuple[list[dict], str]:
    """Each round: every member in it sends one request at once. Returns one result per round (and a profile)."""
    import discord.gateway
    import discord.http
    import yarl

    from discordbot.bot import ImageCreditsBot
    from discordbot.bridge import close_db_connections

    fake = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE),
        "--fake-discord",
        root,
        cwd=root,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    where = await _read_tagged(fake.stdout, "BENCH-FAKE")
    # The same test-side redirect as the test suite: discord.py's two base URLs, nothing else.
    discord.http.Route.BASE = where["api_base"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(where["gateway_url"])
    bot = ImageCreditsBot()
    bot_task = asyncio.create_task(bot.start("bench-token"))

    profiler = None
    results = []
    try:
        for number, users in enumerate(rounds):
            if profile and number == len(rounds) - 1:
                from pyinstrument import Profiler

                profiler = Profiler(async_mode="disabled", interval=0.001)
                profiler.start()
            fake.stdin.write((json.dumps({"op": "round", "workload": workload, "users": users}) + "\n").encode())
            await fake.stdin.drain()
            result = await _read_tagged(fake.stdout, "BENCH-ROUND")
            if profiler is not None:
                profiler.stop()
            if "error" in result:
                raise SystemExit(f"{workload}: the fake Discord's round failed: {result['error']}")
            if result["delivered"] + result["missed_3s"] != result["n"]:
                raise SystemExit(
                    f"{workload} N={result['n']}: only {result['delivered']} delivered; refusals: {result['refusals']}"
                )
            results.append(result)
            await asyncio.sleep(0.3)  # let the round's last successes be recorded before the next one
    finally:
        await bot.close()
        await asyncio.wait_for(bot_task, 10)
        await close_db_connections()
        fake.stdin.write(b'{"op": "stop"}\n')
        await fake.stdin.drain()
        fake.stdin.close()
        await asyncio.wait_for(fake.wait(), 15)
    text = ""
    if profiler is not None:
        text = profiler.output_text(unicode=False, color=False, show_all=False)
    return results, text


def child(spec: dict) -> dict:
    """Run one configuration with the bot of `spec["root"]` (sys.path), return its figures."""
    import resource

    sys.path.insert(0, spec["root"])

    with tempfile.TemporaryDirectory(prefix="bot-bench-") as tmp:
        database = Path(tmp) / "bench.sqlite3"
        template = Path(spec["template"]) if spec.get("template") else None
        if not spec["database_url"] and template and template.exists():
            shutil.copyfile(template, database)  # migrated once per checkout: start-up in seconds, not a minute
        _setup_django(
            database_url=spec["database_url"] or f"sqlite:///{database}",
            latency=spec["latency"],
            cap=spec["cap"],
        )
        if not spec["database_url"] and template and not template.exists():
            from django.db import connection as fresh

            fresh.close()
            shutil.copyfile(database, template)
        from django.conf import settings
        from django.db import connection

        from discordbot.models import Generation
        from vouchers.audit import audit_credits
        from vouchers.services import credits_grant

        sizes = [1, *spec["ns"]]  # a warm-up round of one first, not reported
        members = _fresh_members(sum(sizes))
        rounds, at = [], 0
        for n in sizes:
            rounds.append(members[at : at + n])
            at += n
        for user in members:
            credits_grant(discord_user_id=user, amount=CREDITS_PER_MEMBER, memo="bench")
        connection.close()

        results, profile = asyncio.run(
            _run_rounds(spec["workload"], rounds, root=spec["root"], profile=spec.get("profile", False))
        )

        delivered = Generation.objects.filter(
            status=Generation.Status.SUCCEEDED, account__discord_user_id__in=members
        ).count()
        broken = [name for name, problems in audit_credits().items() if problems]
        engine = connection.vendor
        from discordbot import bridge

        db_threads = bridge.db_threads() if hasattr(bridge, "db_threads") else bridge.MAX_DB_THREADS
        connection.close()
    return {
        "results": results[1:],
        "delivered": delivered,
        "missed_3s": sum(r["missed_3s"] for r in results),
        "requests": len(members),
        "audit": broken,
        "engine": engine,
        "db_threads": db_threads,
        "cap": settings.MAX_CONCURRENT_GENERATIONS,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "profile": profile,
    }


# --- the parent: configurations, repetitions, comparison, the table --------------------------------------------------


@dataclass
class Run:
    label: str
    workload: str
    latency: float
    rep: int
    data: dict


def run_child(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", json.dumps(spec)],
        cwd=spec["root"],
        capture_output=True,
        text=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-CHILD "):
            return json.loads(line[len("BENCH-CHILD ") :])
    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    raise SystemExit(f"bench child failed ({spec['workload']}, L={spec['latency']}, {spec['root']})")


def run_all(
    *,
    checkouts: list[tuple[str, str]],
    workloads: list[str],
    latencies: list[float],
    ns: list[int],
    reps: int,
    cap: int,
    database_url: str,
    profile: bool = False,
    progress: bool = True,
) -> list[Run]:
    """Every (workload, latency), each rep, each checkout in turn (interleaved, so load drifts hit both alike)."""
    runs = []
    templates = tempfile.TemporaryDirectory(prefix="bot-bench-templates-")
    for workload in workloads:
        for latency in latencies:
            for rep in range(reps):
                for label, root in checkouts:
                    spec = {
                        "root": root,
                        "workload": workload,
                        "latency": latency,
                        "ns": ns,
                        "cap": cap,
                        "database_url": database_url,
                        "profile": profile and label == checkouts[-1][0] and rep == reps - 1,
                        "template": str(Path(templates.name) / f"{label}.sqlite3"),
                    }
                    data = run_child(spec)
                    runs.append(Run(label, workload, latency, rep, data))
                    if progress:
                        figures = ", ".join(f"N={r['n']} wall/L {r['wall'] / latency:.3f}" for r in data["results"])
                        print(f"  [{workload} L={latency:g} rep {rep + 1} {label}] {figures}", flush=True)
    templates.cleanup()
    return runs


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def print_report(runs: list[Run], *, ns: list[int], cap: int) -> None:
    print()
    first = runs[0].data
    print(
        f"bot_concurrency: placeholder backend, cap = {cap}, GENERATIONS_PER_MEMBER = 1, {first['engine']}, "
        f"{os.cpu_count()} CPUs; {_load()}"
    )
    header = (
        f"{'workload':>8} {'L':>4} {'N':>4}  {'checkout':>10}  {'wall/L per rep':>24}  {'median':>6}  "
        f"{'slowest deferral ms':>19}  {'REST/req':>8}  {'peak RSS MiB':>12}  {'db threads':>10}  {'missed 3 s':>10}"
    )
    print(header)
    keys = sorted({(r.workload, r.latency) for r in runs}, key=lambda k: (WORKLOADS.index(k[0]), -k[1]))
    labels = list(dict.fromkeys(r.label for r in runs))
    for workload, latency in keys:
        for n in ns:
            medians = {}
            for label in labels:
                mine = [r for r in runs if (r.workload, r.latency, r.label) == (workload, latency, label)]
                rows = [next(x for x in r.data["results"] if x["n"] == n) for r in mine]
                ratios = [x["wall"] / latency for x in rows]
                medians[label] = statistics.median(ratios)
                print(
                    f"{workload:>8} {latency:>4g} {n:>4}  {label:>10}  "
                    f"{' '.join(f'{v:.3f}' for v in ratios):>24}  {medians[label]:>6.3f}  "
                    f"{max(x['slowest_deferral'] for x in rows) * 1000:>19.0f}  "
                    f"{statistics.mean(x['rest_per_request'] for x in rows):>8.2f}  "
                    f"{max(r.data['peak_rss_mib'] for r in mine):>12.0f}  {mine[0].data['db_threads']!s:>10}  "
                    f"{sum(x['missed_3s'] for x in rows):>10}"
                )
            if len(labels) == 2:
                base, new = labels
                print(
                    f"{'':>8} {'':>4} {'':>4}  {'ratio':>10}  {new} / {base} median wall/L: "
                    f"{medians[new] / medians[base]:.3f}"
                )
    audits = {r.label: r.data["audit"] for r in runs if r.data["audit"]}
    delivered = sum(r.data["delivered"] for r in runs)
    requests = sum(r.data["requests"] for r in runs)
    missed = sum(r.data["missed_3s"] for r in runs)
    print(
        f"requests delivered: {delivered} of {requests} ({missed} missed Discord's 3 s for a first response, "
        f"refunded); auditcredits: {'ok' if not audits else audits}"
    )
    print(f"after the runs: {_load()}")
    for r in runs:
        if r.data.get("profile"):
            print(f"\n--- pyinstrument, event loop thread: {r.label} {r.workload} L={r.latency:g} N={ns[-1]} ---")
            print(r.data["profile"])


# --- `make bench` ----------------------------------------------------------------------------------------------------


def measure(*, quick: bool) -> list:
    """Rows for the README's table (bench/table.py): N = 50 /generate at L = 2 and L = 1, /edit and count:4 at L = 2,
    three repetitions each (quick: N = 3, L = 0.3, one repetition). Beside each: one request alone, same run."""
    from bench.table import Row

    n, reps = (3, 1) if quick else (50, 3)
    scale = 0.3 if quick else 1.0
    configs = [("generate", 2.0), ("generate", 1.0), ("edit", 2.0), ("count4", 2.0)]
    load_before = os.getloadavg()[0]
    rows = []
    for workload, latency in configs:
        latency *= scale
        runs = run_all(
            checkouts=[("this", str(ROOT))],
            workloads=[workload],
            latencies=[latency],
            ns=[1, n],
            reps=reps,
            cap=50,
            database_url="",
            progress=False,
        )
        for run in runs:
            if run.data["audit"] or run.data["delivered"] + run.data["missed_3s"] != run.data["requests"]:
                raise SystemExit(
                    f"bot_concurrency {workload}: audit {run.data['audit']}, "
                    f"{run.data['delivered']} of {run.data['requests']} delivered"
                )
        alone = [next(x for x in r.data["results"] if x["n"] == 1)["wall"] / latency for r in runs]
        full = [next(x for x in r.data["results"] if x["n"] == n) for r in runs]
        ratios = [x["wall"] / latency for x in full]
        what = {"generate": "/generate", "edit": "/edit (one picture)", "count4": "/generate count:4"}[workload]
        rows.append(
            Row(
                what=f"{n} concurrent {what}, backend {latency:g} s",
                figure=f"wall/L {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})",
                beside=(
                    f"one request alone: wall/L {statistics.median(alone):.2f}; "
                    f"{statistics.mean(x['rest_per_request'] for x in full):.2f} Discord REST calls per request; "
                    f"slowest first response {max(x['slowest_deferral'] for x in full) * 1000:.0f} ms; "
                    f"peak RSS {max(r.data['peak_rss_mib'] for r in runs):.0f} MiB"
                ),
                settings=(
                    f"placeholder backend, cap 50, one request per member, {runs[0].data['engine']} (temporary file), "
                    f"{runs[0].data['db_threads']} database threads, {reps} reps, load average {load_before:.1f}; "
                    f"{sum(r.data['delivered'] for r in runs)} requests delivered, "
                    f"{sum(r.data['missed_3s'] for r in runs)} missed Discord's 3 s (refunded), auditcredits clean"
                ),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", nargs="+", default=["generate"], choices=WORKLOADS)
    parser.add_argument("--latency", type=float, nargs="+", default=[2.0], help="seconds per backend call (L)")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 10, 50], help="concurrent requests per round")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--cap", type=int, default=50, help="MAX_CONCURRENT_GENERATIONS")
    parser.add_argument("--database-url", default="", help="default: a temporary SQLite file per run")
    parser.add_argument("--compare", default="", help="another checkout's root, run beside this one")
    parser.add_argument("--profile", action="store_true", help="pyinstrument summary of this checkout's last run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--fake-discord", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_discord:
        sys.path.insert(0, args.fake_discord)
        asyncio.run(_fake_discord_main())
        return
    if args.child:
        print("BENCH-CHILD " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    checkouts = [("this", str(ROOT))]
    if args.compare:
        checkouts.insert(0, ("compare", str(Path(args.compare).resolve())))
        checkouts = [(Path(root).name if label == "compare" else label, root) for label, root in checkouts]
    print(f"bot_concurrency: {_load()}; checkouts: {', '.join(f'{label}={root}' for label, root in checkouts)}")
    runs = run_all(
        checkouts=checkouts,
        workloads=args.workload,
        latencies=args.latency,
        ns=args.n,
        reps=args.reps,
        cap=args.cap,
        database_url=args.database_url,
        profile=args.profile,
    )
    print_report(runs, ns=args.n, cap=args.cap)


if __name__ == "__main__":
    main()
