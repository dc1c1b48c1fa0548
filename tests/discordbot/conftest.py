"""Fixtures for the bot's tests: the fakes, the real bot connected to them, members with credits."""

import itertools

import pytest
from django.core.cache import cache

from tests.discordbot.fake_discord import redirect_discord_py
from tests.discordbot.harness import BotHarness
from vouchers.services import credits_grant

_member_ids = itertools.count(410_000_000_000_000_001)


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()  # failed-redeem counters live in the cache
    yield
    cache.clear()


@pytest.fixture
def member():
    """A fresh Discord user id each call."""
    return lambda: next(_member_ids)


@pytest.fixture
def fund():
    """Give a member credits (an operator grant, recorded in the ledger)."""

    def give(discord_user_id: int, credits: int) -> None:
        credits_grant(discord_user_id=discord_user_id, amount=credits, memo="test funds")

    return give


@pytest.fixture
def harness(transactional_db, monkeypatch, settings, tmp_path):
    """The fakes running, discord.py pointed at them, the OpenAI backend pointed at the fake; no bot yet.

    The bot's ORM calls run on other threads, hence a transactional database (real commits)."""
    h = BotHarness()
    h.start_servers()
    redirect_discord_py(h.discord, monkeypatch.setattr)
    settings.IMAGE_BACKEND = "openai"
    settings.OPENAI_API_KEY = "sk-test-fake"
    settings.OPENAI_BASE_URL = h.openai.base_url
    settings.OPENAI_MAX_RETRIES = 2
    settings.BOT_HEALTH_FILE = str(tmp_path / "bot.health")  # not the machine's shared default
    yield h
    h.close()


@pytest.fixture
def bot(harness):
    """The real bot, connected to the fake Discord, generating through the fake OpenAI."""
    harness.start_bot()
    return harness
