"""Run the real `manage.py runbot` against the fake Discord, for tests that need a bot process to kill.

The only change is test-side, and the same as in the in-process tests: discord.py's two base URLs. Reads
FAKE_DISCORD_API and FAKE_DISCORD_GATEWAY; everything else (DATABASE_URL, DISCORD_TOKEN, OPENAI_BASE_URL, ...)
comes from the environment like in production.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import discord.gateway  # noqa: E402
import discord.http  # noqa: E402
import yarl  # noqa: E402

discord.http.Route.BASE = os.environ["FAKE_DISCORD_API"]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["FAKE_DISCORD_GATEWAY"])

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "storefront.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", "runbot"])
