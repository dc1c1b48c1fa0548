"""`manage.py check --deploy` refuses a production configuration that would use a test-mode backend or lacks a
key its process needs.

Each process is checked for what it uses (APP_ROLE): the web serves checkout and the Stripe webhook (Stripe keys),
the bot talks to Discord and makes images (DISCORD_TOKEN, the image backend), scheduled jobs reconcile orders with
Stripe. So the bot's task needs no Stripe keys and the web's no Discord token or OpenAI key (least privilege);
`all` (one process running everything) needs all of them.
"""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

PAYMENT_ROLES = ("all", "web", "jobs")
BOT_ROLES = ("all", "bot")


@register(Tags.security, deploy=True)
def check_production_backends(app_configs, **kwargs) -> list[Error]:
    errors: list[Error] = []
    if settings.APP_ROLE in PAYMENT_ROLES:
        errors += _payments()
    if settings.APP_ROLE in BOT_ROLES:
        errors += _images() + _discord()
    return errors


def _payments() -> list[Error]:
    if settings.PAYMENTS_BACKEND == "test":
        return [
            Error(
                "PAYMENTS_BACKEND is 'test': the built-in test-mode checkout hands out vouchers without payment.",
                hint="Set PAYMENTS_BACKEND=stripe with STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET.",
                id="storefront.E001",
            )
        ]
    if not (settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET):
        return [
            Error(
                "Stripe is the payments backend but STRIPE_SECRET_KEY or STRIPE_WEBHOOK_SECRET is empty.",
                hint="Set both from the Stripe dashboard (see .env.example).",
                id="storefront.E002",
            )
        ]
    return []


def _images() -> list[Error]:
    if settings.IMAGE_BACKEND == "placeholder":
        return [
            Error(
                "IMAGE_BACKEND is 'placeholder': members would pay credits for placeholder images.",
                hint="Set IMAGE_BACKEND=openai and OPENAI_API_KEY.",
                id="storefront.E003",
            )
        ]
    if settings.IMAGE_BACKEND == "openai" and not settings.OPENAI_API_KEY:
        return [
            Error(
                "IMAGE_BACKEND is 'openai' but OPENAI_API_KEY is empty.",
                hint="Set OPENAI_API_KEY (see .env.example).",
                id="storefront.E004",
            )
        ]
    return []


def _discord() -> list[Error]:
    if not settings.DISCORD_TOKEN:
        return [
            Error(
                f"APP_ROLE is {settings.APP_ROLE!r} (it runs the bot) but DISCORD_TOKEN is empty.",
                hint="Set DISCORD_TOKEN to the bot's token, or APP_ROLE=web for a process that only serves the shop.",
                id="storefront.E005",
            )
        ]
    return []


@register(deploy=True)
def check_shop_details(app_configs, **kwargs) -> list[Warning]:
    """What a buyer (and Stripe's review) expects to find on a live shop: a way to reach a person, and Discord."""
    from storefront.context_processors import support_link

    warnings: list[Warning] = []
    if settings.APP_ROLE not in ("all", "web"):
        return warnings  # only the web shows the shop's pages
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
