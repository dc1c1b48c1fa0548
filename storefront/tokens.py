"""The signed, expiring `for` token that ties a checkout to a Discord member.

The bot's `/buy` makes one (`buy_token_make`) and links to `SITE_URL/?for=TOKEN`; the pack list carries it into
`POST /checkout/`, which reads it back (`buy_token_read`) so the paid voucher is redeemed to that member.
Signed with SECRET_KEY (shared by the web and bot containers); nobody can forge one for another member.
The token also carries the member's name as Discord showed it when they ran `/buy`, so the shop can say which
account it credits and ask the buyer to confirm. Tokens made before the name was added still work (no name).
A server-bound token (`/server buy`) also carries the server's id: its credits go to that server's wallet, and
its name is the wallet's ("the wallet of server X").
"""

from dataclasses import dataclass

from django.core import signing

BUY_TOKEN_SALT = "storefront.buy-for"
BUY_TOKEN_MAX_AGE_SECONDS = 60 * 60  # a /buy link works for an hour


class BuyTokenError(Exception):
    """The token is forged, garbled or expired. The message is safe to show."""


MAX_NAME_LENGTH = 100


@dataclass(frozen=True)
class BuyFor:
    """Whom a valid `/buy` token credits."""

    discord_user_id: int
    name: str  # "Ada (@ada)"; "" for a token made before names were carried
    # `/server buy`: the credits go to this server's wallet (`discord_user_id` is the manager who asked).
    discord_guild_id: int | None = None


def _one_line(text: str) -> str:
    """Whitespace (newlines included) collapsed to single spaces, control characters dropped: the name goes into
    pages, an email subject and the admin."""
    return " ".join("".join(ch for ch in text if ch.isprintable() or ch.isspace()).split())


def discord_name_label(*, username: str, display_name: str = "") -> str:
    """How a member is named to a buyer: the display name and the unique @username, or just the @username."""
    username, display_name = _one_line(username), _one_line(display_name)
    if not username:
        return display_name[:MAX_NAME_LENGTH]
    if display_name and display_name != username:
        return f"{display_name} (@{username})"[:MAX_NAME_LENGTH]
    return f"@{username}"[:MAX_NAME_LENGTH]


def buy_token_make(*, discord_user_id: int, discord_name: str = "", discord_guild_id: int | None = None) -> str:
    payload: dict[str, object] = {"discord_user_id": discord_user_id}
    if discord_name:
        payload["name"] = discord_name[:MAX_NAME_LENGTH]
    if discord_guild_id is not None:
        payload["discord_guild_id"] = discord_guild_id
    return signing.dumps(payload, salt=BUY_TOKEN_SALT, compress=True)


def buy_token_open(*, token: str, max_age: int = BUY_TOKEN_MAX_AGE_SECONDS) -> BuyFor:
    """Whom a valid token credits; raises BuyTokenError otherwise."""
    try:
        data = signing.loads(token, salt=BUY_TOKEN_SALT, max_age=max_age)
    except signing.SignatureExpired:
        raise BuyTokenError("This purchase link has expired. Run /buy in Discord for a new one.") from None
    except signing.BadSignature:
        raise BuyTokenError("This purchase link is not valid. Run /buy in Discord for a new one.") from None
    user_id = data.get("discord_user_id") if isinstance(data, dict) else None
    if type(user_id) is not int or user_id <= 0:
        raise BuyTokenError("This purchase link is not valid. Run /buy in Discord for a new one.")
    guild_id = data.get("discord_guild_id")
    if guild_id is not None and (type(guild_id) is not int or guild_id <= 0):
        raise BuyTokenError("This purchase link is not valid. Run /buy in Discord for a new one.")
    name = data.get("name")
    return BuyFor(
        discord_user_id=user_id,
        name=_one_line(name)[:MAX_NAME_LENGTH] if isinstance(name, str) else "",
        discord_guild_id=guild_id,
    )


def buy_token_read(*, token: str, max_age: int = BUY_TOKEN_MAX_AGE_SECONDS) -> int:
    """The Discord user id inside a valid token; raises BuyTokenError otherwise."""
    return buy_token_open(token=token, max_age=max_age).discord_user_id
