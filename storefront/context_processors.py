"""What every storefront page (and the error pages) knows about the shop: name, contact, Discord invite.

Settings only, no database: the 500 page renders through this too, possibly while the database is down.
"""

from django.conf import settings
from django.http import HttpRequest

from vouchers.pricing import price_range


def support_link(contact: str) -> str:
    """`mailto:` for an email address, the URL itself for a link, "" when no contact is set."""
    contact = contact.strip()
    if not contact:
        return ""
    if contact.startswith(("https://", "http://")):
        return contact
    if "@" in contact and " " not in contact:
        return f"mailto:{contact}"
    return ""


def shop_context() -> dict[str, object]:
    contact = settings.SUPPORT_CONTACT.strip()
    cheapest, dearest = price_range()
    return {
        "image_credits_min": cheapest,
        "image_credits_max": dearest,
        "shop_name": settings.SHOP_NAME,
        "support_contact": contact,
        "support_href": support_link(contact),
        "discord_invite_url": settings.DISCORD_INVITE_URL,
        "legal_entity": settings.LEGAL_ENTITY or settings.SHOP_NAME,
    }


def shop(request: HttpRequest) -> dict[str, object]:
    return shop_context()
