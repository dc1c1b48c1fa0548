"""`manage.py rundev`: what `make run` serves. The storefront on 127.0.0.1:8000, plus the bot when
DISCORD_TOKEN is set (as a child process, stopped with the server)."""

import subprocess
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the storefront for development, and run the Discord bot beside it when DISCORD_TOKEN is set."

    def add_arguments(self, parser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, addrport: str, **options) -> None:
        if settings.PAYMENTS_BACKEND == "test":
            self.stdout.write(self.style.WARNING("Payments: TEST MODE (no Stripe keys); no real money moves."))
        if settings.IMAGE_BACKEND == "placeholder":
            self.stdout.write(self.style.WARNING("Images: placeholder backend (no OpenAI key)."))
        bot = None
        if settings.DISCORD_TOKEN:
            self.stdout.write("DISCORD_TOKEN is set: starting the bot (manage.py runbot).")
            bot = subprocess.Popen([sys.executable, "manage.py", "runbot"], cwd=settings.BASE_DIR)
        else:
            self.stdout.write("DISCORD_TOKEN is empty: serving the storefront only.")
        try:
            # The autoreloader would restart this process and start the bot a second time.
            call_command("runserver", addrport, use_reloader=False)
        finally:
            if bot is not None:
                bot.terminate()
                bot.wait(timeout=15)
