"""Mounted into the bot's container by test_image.py only (never part of the image): Python imports it at start-up,
and it points discord.py at the fake Discord with tests/discordbot/launch_bot.py's own redirect, so the image's
unmodified entrypoint and `runbot` talk to the fake. Does nothing unless FAKE_DISCORD_API is set."""

import os
import runpy

if os.environ.get("FAKE_DISCORD_API"):
    runpy.run_path("/opt/test-launch/launch_bot.py")  # its module level redirects; its __main__ part does not run
