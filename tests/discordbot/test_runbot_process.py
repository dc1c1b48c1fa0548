"""`manage.py runbot` as real processes on one database: killed with SIGKILL mid-generation, the credit comes
back when a process takes over; stopped with SIGTERM, it settles its work and hands over to a stand-by; a second
process stands by while the first holds the lease; an upload cut off by SIGKILL is settled by asking Discord;
Discord unreachable at start is retried; the container health check follows the process."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.db import connection

from discordbot.models import BotProcess, Generation
from tests.discordbot.fake_discord import EPHEMERAL, FakeDiscord
from tests.discordbot.harness import BotHarness
from vouchers.models import LedgerEntry
from vouchers.selectors import account_balance

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LAUNCHER = Path(__file__).with_name("launch_bot.py")


def database_url_for_other_processes() -> str:
    """The test database, as a DATABASE_URL another process can open."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


# Short leases so a takeover after SIGKILL happens within seconds (production: 60 s, heartbeat 10 s).
FAST_LEASE = {
    "BOT_LEASE_SECONDS": "5",
    "BOT_HEARTBEAT_SECONDS": "0.5",
    "DISCORD_UPLOAD_TIMEOUT_SECONDS": "3",
    "BOT_SHUTDOWN_GRACE_SECONDS": "15",
}


class RunbotProcess:
    """`runbot` in a process of its own. By default waits until it is connected to the fake gateway;
    `standby=True` waits until it logged that it stands by instead."""

    def __init__(self, harness: BotHarness, *, standby: bool = False, wait: bool = True, **overrides: str) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="runbot-", suffix=".log", delete=False)
        self.health_file = self.log.name + ".health"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "storefront.settings",
            "DEBUG": "false",
            "SECRET_KEY": "test-secret-key-not-for-production",
            "DATABASE_URL": database_url_for_other_processes(),
            "DISCORD_TOKEN": "fake-bot-token",
            "FAKE_DISCORD_API": harness.discord.api_base,
            "FAKE_DISCORD_GATEWAY": str(harness.discord.gateway_url),
            "IMAGE_BACKEND": "openai",
            "OPENAI_API_KEY": "sk-test-fake",
            "OPENAI_BASE_URL": harness.openai.base_url,
            "OPENAI_MAX_RETRIES": "0",
            "BOT_HEALTH_FILE": self.health_file,
            **FAST_LEASE,
            **overrides,
        }
        self.harness = harness
        self.env = env
        identified = harness.discord.identifies
        self.process = subprocess.Popen(
            [sys.executable, str(LAUNCHER)], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        if not wait:
            return
        try:
            if standby:
                self.wait_for_log("Stand-by:")
            else:
                harness.wait_for(lambda: harness.discord.identifies > identified or self.process.poll() is not None, 30)
        except TimeoutError:
            self.stop()
            raise
        assert self.process.poll() is None, self.output()

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        self.harness.wait_for(lambda: text in self.output() or self.process.poll() is not None, timeout)
        assert text in self.output(), self.output()

    def health(self, max_age: float = 90) -> subprocess.CompletedProcess:
        """The container's health check, as ECS runs it."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "BOT_HEALTH_FILE": self.health_file,
            "BOT_HEALTH_MAX_AGE": str(max_age),
        }
        return subprocess.run(
            [sys.executable, "-m", "discordbot.health"],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for path in (self.log.name, self.health_file):
            if os.path.exists(path):
                os.unlink(path)


@pytest.fixture
def processes(harness):
    started: list[RunbotProcess] = []

    def spawn(**options) -> RunbotProcess:
        started.append(RunbotProcess(harness, **options))
        return started[-1]

    yield spawn
    for bot in started:
        bot.stop()


def test_a_bot_killed_mid_generation_refunds_the_credit_when_it_restarts(
    harness, processes, member, fund, assert_audit_clean
):
    harness.openai.mode = "slow"
    user = member()
    fund(user, 2)
    first = processes()

    harness.command("generate", user=user, prompt="never delivered")
    harness.wait_for(lambda: harness.openai.requests, 15)  # the image is being made
    assert Generation.objects.get().status == Generation.Status.RUNNING
    assert account_balance(discord_user_id=user) == 1

    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    # Nobody was left to refund it: the credit is still taken.
    assert Generation.objects.get().status == Generation.Status.RUNNING
    assert account_balance(discord_user_id=user) == 1

    # The newcomer stands by until the dead process's lease expires, then refunds what it left in flight
    # before it takes interactions.
    processes()

    generation = Generation.objects.get()
    assert generation.status == Generation.Status.REFUNDED and generation.error.startswith("interrupted")
    assert account_balance(discord_user_id=user) == 2
    assert_audit_clean()


def test_sigterm_refunds_unfinished_images_tells_the_member_and_exits_cleanly(
    harness, processes, member, fund, assert_audit_clean
):
    harness.openai.mode = "slow"
    user = member()
    fund(user, 1)
    bot = processes(BOT_SHUTDOWN_GRACE_SECONDS="0")

    sent = harness.command("generate", user=user, prompt="cut short")
    harness.wait_for(lambda: harness.openai.requests, 15)
    bot.process.send_signal(signal.SIGTERM)

    assert bot.process.wait(20) == 0, bot.output()
    answer = harness.answer(sent)
    assert "The bot restarted before your image was finished" in answer.content
    [private] = [m for m in harness.discord.private(sent.token) if m["content"] == answer.content]
    assert private["flags"] & EPHEMERAL
    assert not harness.discord.visible(sent.token) and not harness.discord.channel_saw(answer.content)
    assert BotProcess.objects.get().active is False  # the lease is released for a stand-by
    assert Generation.objects.get().status == Generation.Status.REFUNDED
    assert account_balance(discord_user_id=user) == 1
    assert "Bot stopped" in bot.output()
    for secret in ("fake-bot-token", "sk-test-fake", "test-secret-key-not-for-production"):
        assert secret not in bot.output()  # secrets never reach the logs
    assert_audit_clean()


# --- two processes on one database: stand-by, handover, SIGKILL of either ---------------------------------------


def is_upload(call) -> bool:
    return call.route == "edit_message" and bool(call.uploads)


def charges_and_refunds() -> tuple[int, int]:
    generation = Generation.objects.get()
    entries = LedgerEntry.objects.filter(generation=generation)
    return entries.filter(kind=LedgerEntry.Kind.GENERATE).count(), entries.filter(kind=LedgerEntry.Kind.REFUND).count()


def test_a_second_runbot_stands_by_and_a_rolling_deploy_hands_over_with_the_image_delivered_and_charged_once(
    harness, processes, member, fund, assert_audit_clean
):
    harness.openai.delay = 3.0
    user = member()
    fund(user, 2)
    old = processes()
    sent = harness.command("generate", user=user, prompt="in flight during the deploy")
    harness.wait_for(lambda: harness.openai.requests, 15)

    new = processes(standby=True)  # ECS starts the new task before stopping the old one
    identified = harness.discord.identifies
    new.wait_for_log("Stand-by:")
    assert harness.discord.identifies == identified and harness.discord.connected == 1  # not on the gateway
    harness.wait_for(lambda: old.health().returncode == 0 and new.health().returncode == 0)  # serving; waiting

    old.process.send_signal(signal.SIGTERM)  # ... then stops the old one; its image in the making may finish
    assert old.process.wait(30) == 0, old.output()
    harness.wait_for(lambda: harness.discord.identifies > identified, 30)  # the stand-by took over

    answer = harness.answer(sent)
    assert answer.uploads and answer.status == 200
    generation = Generation.objects.get()
    assert generation.status == Generation.Status.SUCCEEDED and charges_and_refunds() == (1, 0)
    assert account_balance(discord_user_id=user) == 1
    assert new.output().count("Stand-by:") == 1  # one line, not one per poll
    # The new process serves.
    harness.openai.delay = 0
    assert harness.answer(harness.command("generate", user=user, prompt="after the deploy"), 20).uploads
    assert account_balance(discord_user_id=user) == 0
    assert list(BotProcess.objects.filter(active=True).values_list("pid", flat=True)) == [new.process.pid]
    assert_audit_clean()


def test_sigkill_of_the_stand_by_changes_nothing_for_the_image_in_flight(
    harness, processes, member, fund, assert_audit_clean
):
    harness.openai.delay = 2.0
    user = member()
    fund(user, 1)
    serving = processes()
    sent = harness.command("generate", user=user, prompt="unbothered")
    harness.wait_for(lambda: harness.openai.requests, 15)
    standby = processes(standby=True)

    standby.process.send_signal(signal.SIGKILL)
    standby.process.wait(10)

    assert harness.answer(sent, 20).uploads
    harness.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists(), 20)
    assert charges_and_refunds() == (1, 0)
    assert serving.process.poll() is None and serving.health().returncode == 0
    assert_audit_clean()


def test_sigkill_of_the_holder_while_making_the_image_the_stand_by_takes_over_and_refunds(
    harness, processes, member, fund, assert_audit_clean
):
    harness.openai.mode = "slow"
    user = member()
    fund(user, 1)
    serving = processes()
    harness.command("generate", user=user, prompt="never made")
    harness.wait_for(lambda: harness.openai.requests, 15)
    standby = processes(standby=True)
    identified = harness.discord.identifies

    serving.process.send_signal(signal.SIGKILL)
    serving.process.wait(10)

    harness.wait_for(lambda: harness.discord.identifies > identified, 30)  # after the lease expired
    harness.wait_for(lambda: Generation.objects.filter(status=Generation.Status.REFUNDED).exists(), 20)
    assert charges_and_refunds() == (1, 1) and account_balance(discord_user_id=user) == 1
    assert "Refunded 1 generation(s) left in flight" in standby.output()
    assert_audit_clean()


@pytest.mark.parametrize("arrived", [True, False])
def test_sigkill_of_the_holder_mid_upload_is_settled_by_asking_discord(
    harness, processes, member, fund, arrived, assert_audit_clean
):
    """The upload's outcome is unknown to everyone but Discord: the process that takes over asks it."""
    user = member()
    fund(user, 1)
    # The upload reaches Discord and its answer never comes back; or it never completes at all.
    harness.discord.hold(is_upload, seconds=60, applied_first=arrived)
    # A longer upload timeout than the other tests, so the holder is surely killed while its upload hangs.
    slow_upload = {"DISCORD_UPLOAD_TIMEOUT_SECONDS": "8", "BOT_LEASE_SECONDS": "10"}
    serving = processes(**slow_upload)
    standby = processes(standby=True, **slow_upload)
    identified = harness.discord.identifies
    sent = harness.command("generate", user=user, prompt="cut off mid-upload")
    harness.wait_for(lambda: Generation.objects.filter(status=Generation.Status.DELIVERING).exists(), 15)
    if arrived:
        harness.wait_for(lambda: [c for c in harness.discord.snapshot() if is_upload(c)], 15)

    serving.process.send_signal(signal.SIGKILL)
    serving.process.wait(10)

    harness.wait_for(lambda: harness.discord.identifies > identified, 30)
    final = Generation.Status.SUCCEEDED if arrived else Generation.Status.REFUNDED
    harness.wait_for(lambda: Generation.objects.filter(status=final).exists(), 30)
    asked = [c for c in harness.discord.snapshot() if c.route == "channel_message"]
    assert asked, "the new holder must ask Discord, not guess"
    assert not [c for c in harness.discord.snapshot() if c.route == "get_message"]  # the dead holder never asked
    if arrived:
        [message] = harness.discord.visible(sent.token)
        assert message["attachments"]  # the member has the image ...
        assert charges_and_refunds() == (1, 0) and account_balance(discord_user_id=user) == 0  # ... and paid once
        assert "delivered: the charge stands" in standby.output()
    else:
        assert charges_and_refunds() == (1, 1) and account_balance(discord_user_id=user) == 1
        assert "not delivered: refunded" in standby.output()
    assert_audit_clean()


# --- start-up and health ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_discord_unreachable_at_start_is_retried_with_one_line_per_attempt(harness, processes):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v10"
    bot = processes(wait=False, FAKE_DISCORD_API=api, FAKE_DISCORD_GATEWAY=f"ws://127.0.0.1:{port}/gateway-ws")
    bot.wait_for_log("attempt 2:", timeout=30)
    attempts = [line for line in bot.output().splitlines() if "Discord is unreachable" in line]
    assert len(attempts) >= 2 and "retrying in" in attempts[0]
    assert "Traceback" not in bot.output()
    assert bot.health().returncode == 1  # not connected: not healthy

    late = FakeDiscord()
    harness.run(late.start(port))  # Discord comes back
    try:
        harness.wait_for(lambda: late.identifies > 0 or bot.process.poll() is not None, 60)
        assert late.identifies == 1, bot.output()
        harness.wait_for(lambda: bot.health().returncode == 0, 30)
        bot.process.send_signal(signal.SIGTERM)
        assert bot.process.wait(30) == 0, bot.output()
    finally:
        harness.run(late.stop())
    assert "Traceback" not in bot.output()


def test_an_unreachable_gateway_is_retried_in_one_line_per_attempt(harness, processes):
    port = free_port()
    bot = processes(wait=False, FAKE_DISCORD_GATEWAY=f"ws://127.0.0.1:{port}/gateway-ws")
    bot.wait_for_log("Discord gateway unreachable", timeout=60)
    try:
        harness.wait_for(lambda: bot.output().count("Discord gateway unreachable") >= 2, 60)
    except TimeoutError:
        raise AssertionError(bot.output()) from None
    assert "Traceback" not in bot.output()
    assert bot.health().returncode == 1  # holds the lease, but the gateway is not connected
    bot.process.send_signal(signal.SIGTERM)
    assert bot.process.wait(30) == 0, bot.output()


def test_the_health_check_follows_the_process(harness, processes):
    bot = processes()
    harness.wait_for(lambda: bot.health().returncode == 0, 30)
    assert bot.health().stdout.startswith("healthy")

    bot.process.send_signal(signal.SIGKILL)
    bot.process.wait(10)
    result = harness.wait_for(lambda: (r := bot.health(max_age=2)).returncode == 1 and r, 30)
    assert result.stdout.startswith("unhealthy") and len(result.stdout.splitlines()) == 1


def test_the_health_check_needs_no_django_and_no_file_means_unhealthy(tmp_path):
    code = (
        "import runpy, sys\n"
        "try:\n    runpy.run_module('discordbot.health', run_name='__main__')\n"
        "except SystemExit as exit:\n    print('django' in sys.modules, exit.code)\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "BOT_HEALTH_FILE": str(tmp_path / "missing")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=LAUNCHER.parents[2], capture_output=True, text=True, timeout=30
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("unhealthy") and lines[1] == "False 1"
