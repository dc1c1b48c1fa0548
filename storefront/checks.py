"""`manage.py check --deploy` refuses a production configuration that would use a test-mode backend."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def check_production_backends(app_configs, **kwargs) -> list[Error]:
    errors: list[Error] = []
    if settings.PAYMENTS_BACKEND == "test":
        errors.append(
            Error(
                "PAYMENTS_BACKEND is 'test': the built-in test-mode checkout hands out vouchers without payment.",
                hint="Set PAYMENTS_BACKEND=stripe with STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET.",
                id="storefront.E001",
            )
        )
    elif not (settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET):
        errors.append(
            Error(
                "Stripe is the payments backend but STRIPE_SECRET_KEY or STRIPE_WEBHOOK_SECRET is empty.",
                hint="Set both from the Stripe dashboard (see .env.example).",
                id="storefront.E002",
            )
        )
    if settings.IMAGE_BACKEND == "placeholder":
        errors.append(
            Error(
                "IMAGE_BACKEND is 'placeholder': members would pay credits for placeholder images.",
                hint="Set IMAGE_BACKEND=openai and OPENAI_API_KEY.",
                id="storefront.E003",
            )
        )
    elif settings.IMAGE_BACKEND == "openai" and not settings.OPENAI_API_KEY:
        errors.append(
            Error(
                "IMAGE_BACKEND is 'openai' but OPENAI_API_KEY is empty.",
                hint="Set OPENAI_API_KEY (see .env.example).",
                id="storefront.E004",
            )
        )
    return errors


@register(deploy=True)
def check_shop_details(app_configs, **kwargs) -> list[Warning]:
    """What a buyer (and Stripe's review) expects to find on a live shop: a way to reach a person, and Discord."""
    from storefront.context_processors import support_link

    warnings: list[Warning] = []
    if not support_link(settings.SUPPORT_CONTACT):
        warnings.append(
            Warning(
                "SUPPORT_CONTACT is empty or neither an email address nor an http(s) URL.",
                hint="Stripe expects a contact on the site; pages, receipts and the legal pages show it.",
                id="storefront.W001",
            )
        )
    if not settings.DISCORD_INVITE_URL:
        warnings.append(
            Warning(
                "DISCORD_INVITE_URL is empty: buyers who don't come from Discord can't find the bot's server.",
                hint="Set it to an invite that does not expire (https://discord.gg/...).",
                id="storefront.W002",
            )
        )
    return warnings
