"""`manage.py check` (and the bot's start, which runs the checks) refuses a malformed image price setup."""

from django.conf import settings
from django.core.checks import Error, Info, register
from django.core.exceptions import ImproperlyConfigured

from discordbot.spend import check_spend_prices, spend_prices


@register()
def check_image_prices(app_configs, **kwargs) -> list[Error]:
    errors: list[Error] = []
    try:
        check_spend_prices()
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="discordbot.E001"))
    surcharges = settings.IMAGE_OPERATION_SURCHARGES
    if not isinstance(surcharges, dict) or any(type(v) is not int or v < 0 for v in surcharges.values()):
        errors.append(
            Error("IMAGE_OPERATION_SURCHARGES must map operations to whole credits, 0 or more.", id="discordbot.E002")
        )
    if not 1 <= settings.IMAGE_MAX_COUNT <= 10:
        errors.append(Error("IMAGE_MAX_COUNT must be 1 to 10 (the image API's limit).", id="discordbot.E003"))
    return errors


@register(deploy=True)
def check_image_spend_priced(app_configs, **kwargs) -> list[Info]:
    if settings.IMAGE_BACKEND != "openai":
        return []
    try:
        priced = spend_prices(model=settings.IMAGE_MODEL) is not None
    except ImproperlyConfigured:
        return []  # reported by check_image_prices
    if priced:
        return []
    # Info, not a warning: images are still made and charged; only the dashboard's image cost (and margin) stays
    # unknown until the operator copies the prices in.
    return [
        Info(
            f"IMAGE_SPEND_PRICES has no row for IMAGE_MODEL {settings.IMAGE_MODEL}: its spend is recorded as unknown.",
            hint="Copy the model's token prices from OpenAI's price page (see .env.example).",
            id="discordbot.I001",
        )
    ]
