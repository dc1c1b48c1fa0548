"""A server-bound `/server buy` link: the checkout's credits go to the server's wallet, through the fake Stripe and
a signed webhook; a refund claws back from the wallet; a forged server id is refused."""

import pytest
from django.core import signing

from storefront.models import Order
from storefront.tokens import BUY_TOKEN_SALT, buy_token_make
from tests.storefront.conftest import charge_refunded_event, deliver, event_body, start_checkout
from vouchers.models import CreditAccount, Voucher

pytestmark = pytest.mark.django_db

GUILD = 1_300_000_000_000_000_010
MANAGER = 4242


def server_token(**extra) -> str:
    return buy_token_make(
        discord_user_id=MANAGER, discord_name="the wallet of server Cats", discord_guild_id=GUILD, **extra
    )


def paid(client, fake_stripe, pack) -> Order:
    order = start_checkout(client, pack, **{"for": server_token()})
    fake_stripe.mark_paid(order.stripe_session_id)
    body = event_body("checkout.session.completed", fake_stripe.sessions[order.stripe_session_id])
    assert deliver(client, body).status_code == 200
    return order


def test_a_server_bound_link_credits_the_servers_wallet_not_the_manager(client, fake_stripe, pack, assert_audit_clean):
    order = paid(client, fake_stripe, pack)

    order.refresh_from_db()
    assert (order.discord_guild_id, order.discord_user_id) == (GUILD, MANAGER)
    wallet = CreditAccount.objects.get(discord_guild_id=GUILD)
    voucher = Voucher.objects.get(order=order)
    assert (wallet.kind, wallet.balance, voucher.status, voucher.redeemed_by_id) == (
        "server",
        150,
        "redeemed",
        wallet.pk,
    )
    assert not CreditAccount.objects.filter(discord_user_id=MANAGER).exists()
    page = client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content.decode()
    assert "the wallet of server Cats" in page
    assert_audit_clean()


def test_the_pack_page_says_the_credits_go_to_the_servers_wallet(client, pack):
    page = client.get("/", {"for": server_token()}).content.decode()

    assert "/server buy" in page and "the wallet of server Cats" in page


def test_a_refund_of_a_server_order_claws_back_from_the_wallet(client, fake_stripe, pack, assert_audit_clean):
    order = paid(client, fake_stripe, pack)
    fake_stripe.refund(order.stripe_session_id)

    assert deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id)).status_code == 200

    assert CreditAccount.objects.get(discord_guild_id=GUILD).balance == 0
    assert_audit_clean()


@pytest.mark.parametrize("guild_id", ["1300000000000000010", -1, 0, 1.5])
def test_a_token_with_a_forged_server_id_is_refused(client, fake_stripe, pack, guild_id):
    token = signing.dumps(
        {"discord_user_id": MANAGER, "discord_guild_id": guild_id}, salt=BUY_TOKEN_SALT, compress=True
    )

    response = client.post("/checkout/", {"pack": pack.pk, "for": token})

    assert response.status_code == 400 and "not valid" in response.content.decode()
    assert not Order.objects.exists()
