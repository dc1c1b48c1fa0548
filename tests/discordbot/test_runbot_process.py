"""`manage.py runbot` as a real process: killed with SIGKILL mid-generation, the credit comes back when it
restarts; stopped with SIGTERM, it refunds and tells the member, then exits cleanly."""

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.db import connection

from discordbot.models import BotProcess, Generation
from tests.discordbot.fake_discord import EPHEMERAL
from tests.discordbot.harness import BotHarness
from vouchers.selectors import account_balance

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LAUNCHER = Path(__file__).with_name("launch_bot.py")


def database_url_for_other_processes() -> str:
    """The test database, as a DATABASE_URL another process can open."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
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
