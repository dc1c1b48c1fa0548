"""The signed, expiring `for` token that ties a checkout to a Discord member.

The bot's `/buy` makes one (`buy_token_make`) and links to `SITE_URL/?for=TOKEN`; the pack list carries it into
`POST /checkout/`, which reads it back (`buy_token_read`) so the paid voucher is redeemed to that member.
Signed with SECRET_KEY (shared by the web and bot containers); nobody can forge one for another member.
"""

from django.core import signing

BUY_TOKEN_SALT = "storefront.buy-for"
BUY_TOKEN_MAX_AGE_SECONDS = 60 * 60  # a /buy link works for an hour


class BuyTokenError(Exception):
    """The token is forged, garbled or expired. The message is safe to show."""


def buy_token_make(*, discord_user_id: int) -> str:
    return signing.dumps({"discord_user_id": discord_user_id}, salt=BUY_TOKEN_SALT, compress=True)


def buy_token_read(*, token: str, max_age: int = BUY_TOKEN_MAX_AGE_SECONDS) -> int:
    """The Discord user id inside a valid token; raises BuyTokenError otherwise."""
    try:
        data = signing.loads(token, salt=BUY_TOKEN_SALT, max_age=max_age)
    except signing.SignatureExpired:
        raise BuyTokenError("This purchase link has expired. Run /buy in Discord for a new one.") from None
    except signing.BadSignature:
        raise BuyTokenError("This purchase link is not valid. Run /buy in Discord for a new one.") from None
    user_id = data.get("discord_user_id") if isinstance(data, dict) else None
    if type(user_id) is not int or user_id <= 0:
        raise BuyTokenError("This purchase link is not valid. Run /buy in Discord for a new one.")
    return user_id
