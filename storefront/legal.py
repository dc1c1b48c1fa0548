"""The legal pages: their default wording, and the small plain-text format an operator writes them in.

Format: a blank line starts a new block; a block starting with `## ` is a heading; a block whose lines all start
with `- ` is a list; anything else is a paragraph. Everything is escaped: an operator's text is never HTML.
The words {shop_name}, {legal_entity}, {support_contact} and {site_url} are filled in from the settings.
"""

from django.conf import settings
from django.utils.html import escape, format_html_join
from django.utils.safestring import SafeString, mark_safe

DEFAULT_TITLES = {
    "terms": "Terms of service",
    "privacy": "Privacy policy",
    "refunds": "Refund policy",
}

DEFAULT_BODIES = {
    "terms": """\
These terms apply when you buy image credits from {shop_name}, run by {legal_entity}, and use them with our \
Discord bot. By paying you agree to them.

## What you buy
- A credit pack gives you a voucher worth a number of image credits. Redeem it in Discord with /redeem, or buy \
through /buy and the credits go straight to your Discord account.
- Each image you make with /generate costs credits by size and quality; the shop shows the price table. If an \
image cannot be delivered, its credits are returned to you automatically.
- Credits have no cash value, cannot be exchanged for money and do not expire while the service runs.

## Vouchers
A voucher can be redeemed once, by whoever uses it first. Keep it private unless you mean to give it away: we \
cannot return a voucher someone else has redeemed.

## Acceptable use
Don't ask the bot for images that are illegal, that harass or impersonate real people, or that break \
Discord's or our image provider's rules. Prompts the provider blocks are refused and their credits returned. \
We may suspend accounts that abuse the service.

## The images
You may use the images you make for any lawful purpose. Image generation is automatic and may produce \
unexpected results; we don't promise any particular result.

## Changes and contact
We may change these terms; the version on this page applies to purchases made while it is shown. \
Questions: {support_contact}.
""",
    "privacy": """\
This policy explains what {legal_entity} ("we"), which runs {shop_name}, keeps about you and why.

## What we keep
- Your email address, if you give it at checkout: to send your voucher and answer questions about an order.
- Your Discord user id, when you use the bot or buy through /buy: to keep your credit balance.
- The prompts you send to the bot and a record of each image (size, quality, time, cost), to deliver it, \
refund it if it fails, and prevent abuse.
- Order records (pack, amount, time): for our accounts, which the law requires us to keep.

## Who else sees it
- Stripe processes your payment. We never see or store your card details.
- Our image provider receives your prompt, with an anonymous identifier, to make the image.
- Discord carries the bot's messages, under Discord's own privacy policy.
We don't sell your data or use it for advertising.

## Your rights
You can ask for a copy of what we hold about you, or for its deletion where we don't have to keep it: \
write to {support_contact}.
""",
    "refunds": """\
We want you to be happy with your purchase from {shop_name}.

## Unused credits
If you have not redeemed your voucher, or have not spent any of the credits you bought, ask for a refund within \
14 days of the purchase and we refund the full amount to your payment method. The voucher stops working.

## Used credits
Credits already spent on images are not refundable. If you ask for a refund of a pack you have partly used, we \
can refund the unused part; the credits left from that pack are then removed from your balance.

## Failed images
You never pay for an image you did not get: when an image fails or is blocked, its credits go back to your \
balance automatically.

## How to ask
Write to {support_contact} with your order number (it is on your receipt page and in your email). Refunds \
reach your account within 5 to 10 business days, depending on your bank.
""",
}


def legal_fill(text: str) -> str:
    """Fill in the shop's details; unknown braces are left as written."""
    contact = settings.SUPPORT_CONTACT.strip() or "the contact shown at the foot of this page"
    values = {
        "{shop_name}": settings.SHOP_NAME,
        "{legal_entity}": settings.LEGAL_ENTITY or settings.SHOP_NAME,
        "{support_contact}": contact,
        "{site_url}": settings.SITE_URL,
    }
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def legal_render(text: str) -> SafeString:
    """The plain-text format above as HTML. Every piece of the operator's text is escaped."""
    parts = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        block = block.strip()
        if not block:
            continue
        lines = [line.strip() for line in block.split("\n")]
        if block.startswith("## "):
            heading, rest = lines[0][3:], lines[1:]
            parts.append(f"<h2>{escape(heading)}</h2>")
            if rest:
                parts.append(legal_render("\n".join(rest)))
        elif all(line.startswith("- ") for line in lines):
            items = format_html_join("", "<li>{}</li>", ((line[2:],) for line in lines))
            parts.append(f"<ul>{items}</ul>")
        else:
            parts.append("<p>" + "<br>".join(escape(line) for line in lines) + "</p>")
    return mark_safe("\n".join(parts))  # noqa: S308 - built only from escaped pieces
