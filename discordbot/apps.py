from django.apps import AppConfig


class DiscordbotConfig(AppConfig):
    name = "discordbot"
    verbose_name = "Discord bot"

    def ready(self) -> None:
        from discordbot import checks  # noqa: F401  (registers the image price checks)
