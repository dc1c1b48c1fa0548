from django.apps import AppConfig


class DiscordbotConfig(AppConfig):
    name = "discordbot"
    verbose_name = "Discord bot"
