"""`manage.py rundev [ADDR:PORT]`: what `make run` serves. The storefront on 127.0.0.1:8000 (or `make run
PORT=...`), plus the bot when DISCORD_TOKEN is set (as a child process, stopped with the server)."""

import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0")


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class Command(BaseCommand):
    help = "Serve the storefront for development, and run the Discord bot beside it when DISCORD_TOKEN is set."

    def add_arguments(self, parser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, addrport: str, **options) -> None:
        host, _, port_text = addrport.rpartition(":")
        host = host or "127.0.0.1"
        if not port_text.isdigit():
            raise CommandError(f"{addrport!r} is not ADDRESS:PORT.")
        port = int(port_text)
        if not port_free(host, port):
            raise CommandError(f"Port {port} is already in use. Try another one: make run PORT={port + 1}")
        # A local SITE_URL follows the port, so Stripe's return links and the bot's /buy links point here.
        site = urlsplit(settings.SITE_URL)
        if site.hostname in LOCAL_HOSTS and site.port != port:
            settings.SITE_URL = f"{site.scheme}://{site.hostname}:{port}"
        self.stdout.write(f"Storefront: {settings.SITE_URL}/")
        if settings.PAYMENTS_BACKEND == "test":
            self.stdout.write(self.style.WARNING("Payments: TEST MODE (no Stripe keys); no real money moves."))
        if settings.IMAGE_BACKEND == "placeholder":
            self.stdout.write(self.style.WARNING("Images: placeholder backend (no OpenAI key)."))
        bot = None
        if settings.DISCORD_TOKEN:
            self.stdout.write("DISCORD_TOKEN is set: starting the bot (manage.py runbot).")
            env = {**os.environ, "SITE_URL": settings.SITE_URL}
            bot = subprocess.Popen([sys.executable, "manage.py", "runbot"], cwd=settings.BASE_DIR, env=env)
        else:
            self.stdout.write("DISCORD_TOKEN is empty: serving the storefront only.")
        try:
            # The autoreloader would restart this process and start the bot a second time.
            call_command("runserver", addrport, use_reloader=False)
        finally:
            if bot is not None:
                bot.terminate()
                bot.wait(timeout=15)
