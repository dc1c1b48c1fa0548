"""/buy puts the member's Discord name in its signed link, so the shop can say whom the purchase credits."""

from urllib.parse import parse_qs, urlparse

import pytest

from storefront.tokens import buy_token_open

pytestmark = pytest.mark.django_db(transaction=True)


def test_buy_link_carries_the_members_display_name_and_username(bot, member, client):
    user = member()

    reply = bot.answer(bot.command("buy", user=user))

    [button] = reply.buttons
    [token] = parse_qs(urlparse(button["url"]).query)["for"]
    buy_for = buy_token_open(token=token)
    name = f"Member {user % 10000} (@member{user % 10000})"  # the fake's global_name and username
    assert (buy_for.discord_user_id, buy_for.name) == (user, name)
    assert len(button["url"]) <= 512  # Discord's limit for a link button
    assert name in client.get("/", {"for": token}).content.decode()  # and the shop names that member
