"""The pack list from the per-process page cache: always what the database says now, and each visitor's own
CSRF token, never another's (storefront/pagecache.py)."""

import re

import pytest
from django.middleware.csrf import _unmask_cipher_token
from django.test import Client
from django.urls import reverse

from storefront.models import CreditPack, SampleImage
from storefront.pagecache import CSRF_PLACEHOLDER
from tests.storefront.conftest import make_pack

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def visit(client: Client) -> tuple[str, list[str], str]:
    """The page, the CSRF tokens in its forms, and the CSRF cookie the client holds after it."""
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    return page, TOKEN.findall(page), client.cookies["csrftoken"].value


def test_each_visitor_gets_a_token_of_their_own_secret_and_never_anothers(no_packs):
    make_pack(name="Starter", credits=50, price_cents=500)
    make_pack(name="Studio", credits=400, price_cents=2800)
    alice, bob = Client(), Client()

    alice_page, alice_tokens, alice_cookie = visit(alice)
    bob_page, bob_tokens, bob_cookie = visit(bob)  # served from the cache alice's visit filled

    assert alice_cookie != bob_cookie
    assert len(alice_tokens) == len(bob_tokens) == 2
    assert {_unmask_cipher_token(t) for t in alice_tokens} == {alice_cookie}
    assert {_unmask_cipher_token(t) for t in bob_tokens} == {bob_cookie}
    assert not set(alice_tokens) & set(bob_tokens)
    for page in (alice_page, bob_page):
        assert CSRF_PLACEHOLDER not in page and "csrfplaceholder" not in page
    # Apart from the tokens, it is the same page.
    assert TOKEN.sub("", alice_page) == TOKEN.sub("", bob_page)


def test_a_visitor_coming_back_keeps_their_cookie_and_gets_a_token_for_it(no_packs):
    make_pack()
    client = Client()
    _, _, cookie = visit(client)

    response = client.get("/")

    assert response.cookies["csrftoken"].value == cookie  # the same secret (Django sends it again, unchanged)
    assert {_unmask_cipher_token(t) for t in TOKEN.findall(response.content.decode())} == {cookie}
    assert "Cookie" in response["Vary"]


def test_a_form_from_the_cached_page_checks_out_with_its_own_cookie_and_not_with_anothers(no_packs, fake_stripe):
    pack = make_pack()
    alice, bob = Client(enforce_csrf_checks=True), Client(enforce_csrf_checks=True)
    _, alice_tokens, _ = visit(alice)
    visit(bob)

    stolen = bob.post("/checkout/", {"pack": pack.pk, "csrfmiddlewaretoken": alice_tokens[0]})
    own = alice.post("/checkout/", {"pack": pack.pk, "csrfmiddlewaretoken": alice_tokens[0]})

    assert stolen.status_code == 403
    assert own.status_code == 303


def test_a_pack_changed_in_the_admin_shows_on_the_next_load(operator, no_packs):
    pack = make_pack(name="Creator", credits=150, price_cents=1200)
    visitor = Client()
    assert "$12.00" in visit(visitor)[0]

    response = operator.post(
        reverse("admin:storefront_creditpack_change", args=[pack.pk]),
        {
            "name": "Creator Plus",
            "credits": 150,
            "price_cents": 900,
            "currency": "usd",
            "active": "on",
            "sort_order": 1,
        },
    )
    assert response.status_code == 302

    page = visit(visitor)[0]
    assert "Creator Plus" in page and "$9.00" in page and "$12.00" not in page


def test_a_change_made_by_another_process_shows_too(no_packs):
    """No signal reaches this process when another one writes (or an UPDATE skips signals): the key still changes."""
    pack = make_pack(name="Creator", price_cents=1200)
    other = make_pack(name="Studio", credits=400, price_cents=2800)
    assert "Studio" in visit(Client())[0]

    CreditPack.objects.filter(pk=pack.pk).update(price_cents=1100)
    CreditPack.objects.filter(pk=other.pk).update(active=False)

    page = visit(Client())[0]
    assert "$11.00" in page and "Studio" not in page


def test_a_new_gallery_image_shows_on_the_next_load(no_packs):
    make_pack()
    assert "Made with the bot" not in visit(Client())[0]

    SampleImage.objects.create(
        prompt="a lighthouse at dusk", image=b"\x89PNG", content_type="image/png", width=8, height=8, digest="ab" * 32
    )

    assert "a lighthouse at dusk" in visit(Client())[0]


def test_a_buy_link_is_never_served_from_the_cache(no_packs):
    from storefront.tokens import buy_token_make

    make_pack()
    visit(Client())  # fills the cache
    token = buy_token_make(discord_user_id=4242, discord_name="Ada (@ada)")

    page = Client().get("/", {"for": token}).content.decode()

    assert "Ada (@ada)" in page and "Who are these credits for?" in page


def test_settings_on_the_page_are_part_of_the_key(no_packs, settings):
    make_pack()
    visit(Client())

    settings.SHOP_NAME = "Pixel Forge Bench"

    assert "Pixel Forge Bench" in visit(Client())[0]
