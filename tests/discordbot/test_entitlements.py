"""The rules of Discord's checkout (discordbot.entitlements), against the database: an entitlement credits its
pack once (repeated, raced by threads on their own connections, refunded first), is consumed only when credited,
and a refund is clawed back like a Stripe refund (spendable credits at once, the spent ones owed)."""

import itertools
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, close_old_connections, connections, transaction

from discordbot.entitlements import (
    EntitlementError,
    entitlement_claw_back,
    entitlement_credit,
    entitlement_mark_consumed,
    entitlements_to_consume,
    store_sku_ids,
    store_skus,
)
from discordbot.models import EntitlementPurchase
from storefront.models import CreditPack
from vouchers.models import Clawback, CreditAccount, LedgerEntry, Voucher
from vouchers.selectors import account_balance
from vouchers.services import credits_reserve

_ids = itertools.count(1_350_000_000_000_000_001)


def new_id() -> int:
    return next(_ids)


def sku_pack(*, credits: int = 40, active: bool = True, name: str = "Discord pack") -> CreditPack:
    return CreditPack.objects.create(
        name=name, credits=credits, price_cents=499, currency="usd", active=active, discord_sku_id=new_id()
    )


@pytest.mark.django_db
def test_no_pack_with_a_sku_means_the_store_is_off():
    CreditPack.objects.update(discord_sku_id=None)
    assert store_skus() == [] and store_sku_ids() == []


@pytest.mark.django_db
def test_the_store_shows_active_packs_but_honours_every_mapped_sku():
    on_sale, retired = sku_pack(credits=40, name="On sale"), sku_pack(credits=90, active=False, name="Retired")
    assert [(s.sku_id, s.name, s.credits) for s in store_skus()] == [(on_sale.discord_sku_id, "On sale", 40)]
    assert set(store_sku_ids()) == {on_sale.discord_sku_id, retired.discord_sku_id}


@pytest.mark.django_db
def test_a_pack_refuses_a_bad_or_shared_sku_id():
    pack, other = sku_pack(), sku_pack()
    taken = pack.discord_sku_id
    pack.discord_sku_id = -5
    with pytest.raises(ValidationError) as error:
        pack.full_clean()
    assert "discord_sku_id" in error.value.message_dict
    with pytest.raises(IntegrityError), transaction.atomic():  # one SKU sells one pack
        CreditPack.objects.filter(pk=other.pk).update(discord_sku_id=taken)


@pytest.mark.django_db
def test_an_entitlement_credits_its_pack_once_through_a_voucher(assert_audit_clean):
    pack, user, entitlement = sku_pack(credits=40), new_id(), new_id()

    first = entitlement_credit(entitlement_id=entitlement, sku_id=pack.discord_sku_id, discord_user_id=user)
    again = entitlement_credit(entitlement_id=entitlement, sku_id=pack.discord_sku_id, discord_user_id=user)

    assert first.credited_now and first.credits == 40 and first.consume
    assert not again.credited_now and again.consume  # not consumed yet: the caller consumes it
    assert account_balance(discord_user_id=user) == 40
    purchase = EntitlementPurchase.objects.get(entitlement_id=entitlement)
    assert purchase.voucher.status == Voucher.Status.REDEEMED and purchase.voucher.credits == 40
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REDEEM, voucher=purchase.voucher).count() == 1
    assert_audit_clean()


@pytest.mark.django_db
def test_the_credits_are_the_packs_at_purchase_time(assert_audit_clean):
    pack, user = sku_pack(credits=40), new_id()
    entitlement_credit(entitlement_id=new_id(), sku_id=pack.discord_sku_id, discord_user_id=user)
    CreditPack.objects.filter(pk=pack.pk).update(credits=60)  # the operator changes the pack later
    entitlement_credit(entitlement_id=new_id(), sku_id=pack.discord_sku_id, discord_user_id=user)
    assert account_balance(discord_user_id=user) == 100
    assert_audit_clean()


@pytest.mark.django_db
@pytest.mark.parametrize("owner", ["server", "unknown sku", "bad id"])
def test_an_entitlement_that_sells_no_pack_to_a_member_credits_nothing(owner):
    pack = sku_pack()
    options = {"entitlement_id": new_id(), "sku_id": pack.discord_sku_id, "discord_user_id": new_id()}
    if owner == "server":
        options["discord_user_id"] = None
    elif owner == "unknown sku":
        options["sku_id"] = new_id()
    else:
        options["entitlement_id"] = "123"
    with pytest.raises(EntitlementError):
        entitlement_credit(**options)
    assert not EntitlementPurchase.objects.exists() and not CreditAccount.objects.exists()
    assert not Voucher.objects.filter(note__startswith="Discord entitlement").exists()


@pytest.mark.django_db
def test_consumed_is_recorded_once_and_only_unconsumed_credited_ones_are_retried():
    pack, user = sku_pack(), new_id()
    done, pending, refunded = new_id(), new_id(), new_id()
    for entitlement in (done, pending, refunded):
        entitlement_credit(entitlement_id=entitlement, sku_id=pack.discord_sku_id, discord_user_id=user)
    assert entitlement_mark_consumed(entitlement_id=done) is True
    assert entitlement_mark_consumed(entitlement_id=done) is False
    entitlement_claw_back(entitlement_id=refunded, sku_id=pack.discord_sku_id, discord_user_id=user)
    assert entitlements_to_consume() == [pending]
    assert entitlement_credit(entitlement_id=done, sku_id=pack.discord_sku_id, discord_user_id=user).consume is False


@pytest.mark.django_db
def test_a_refund_takes_back_what_is_left_and_the_spent_credits_become_owed(assert_audit_clean):
    pack, user, entitlement = sku_pack(credits=40), new_id(), new_id()
    entitlement_credit(entitlement_id=entitlement, sku_id=pack.discord_sku_id, discord_user_id=user)
    credits_reserve(discord_user_id=user, amount=15, memo="spent on images")

    clawback = entitlement_claw_back(entitlement_id=entitlement, sku_id=pack.discord_sku_id, discord_user_id=user)
    again = entitlement_claw_back(entitlement_id=entitlement, sku_id=pack.discord_sku_id, discord_user_id=user)

    assert clawback.cause == f"entitlement:{entitlement}" and clawback.taken == 25 and clawback.owed == 15
    assert again.pk == clawback.pk and Clawback.objects.count() == 1
    account = CreditAccount.objects.get(discord_user_id=user)
    assert account.balance == 0 and account.owed == 15
    purchase = EntitlementPurchase.objects.get(entitlement_id=entitlement)
    assert purchase.deleted_at is not None
    assert entitlement_credit(entitlement_id=entitlement, sku_id=pack.discord_sku_id, discord_user_id=user).deleted
    assert_audit_clean()


@pytest.mark.django_db
def test_an_entitlement_refunded_before_it_was_credited_is_never_credited(assert_audit_clean):
    pack, user, entitlement = sku_pack(), new_id(), new_id()

    assert entitlement_claw_back(entitlement_id=entitlement, sku_id=pack.discord_sku_id, discord_user_id=user) is None
    late = entitlement_credit(entitlement_id=entitlement, sku_id=pack.discord_sku_id, discord_user_id=user)

    assert late.deleted and not late.credited_now and not late.consume
    assert not CreditAccount.objects.filter(discord_user_id=user).exists()
    assert_audit_clean()


@pytest.mark.django_db
def test_a_refund_of_a_sku_that_sells_nothing_writes_nothing():
    assert entitlement_claw_back(entitlement_id=new_id(), sku_id=new_id(), discord_user_id=new_id()) is None
    assert not EntitlementPurchase.objects.exists()


def _race(workers: int, work) -> list:
    """Run `work(i)` on `workers` threads released together, each on its own database connection."""
    barrier = threading.Barrier(workers)
    results: list = [None] * workers

    def run(i: int) -> None:
        try:
            barrier.wait(10)
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - the test looks at what each thread got
            results[i] = exc
        finally:
            close_old_connections()
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.mark.django_db(transaction=True)
def test_racing_deliveries_on_separate_connections_credit_once(assert_audit_clean):
    pack, user, entitlement = sku_pack(credits=40), new_id(), new_id()

    results = _race(
        6,
        lambda i: entitlement_credit(entitlement_id=entitlement, sku_id=pack.discord_sku_id, discord_user_id=user),
    )

    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r.credited_now for r in results) == 1
    assert account_balance(discord_user_id=user) == 40
    assert Voucher.objects.filter(note=f"Discord entitlement {entitlement}").count() == 1
    assert_audit_clean()


@pytest.mark.django_db(transaction=True)
def test_a_refund_racing_the_credit_never_leaves_credits(assert_audit_clean):
    pack = sku_pack(credits=40)
    for _ in range(4):
        user, entitlement = new_id(), new_id()
        options = {"entitlement_id": entitlement, "sku_id": pack.discord_sku_id, "discord_user_id": user}

        results = _race(2, lambda i, o=options: (entitlement_credit if i == 0 else entitlement_claw_back)(**o))

        assert not [r for r in results if isinstance(r, Exception)], results
        assert account_balance(discord_user_id=user) == 0
        assert EntitlementPurchase.objects.get(entitlement_id=entitlement).deleted_at is not None
    assert_audit_clean()


@pytest.mark.django_db
def test_operators_see_discord_purchases_read_only_in_the_admin(operator):
    pack, user = sku_pack(credits=40, name="Discord pack"), new_id()
    credited, refunded = new_id(), new_id()
    entitlement_credit(entitlement_id=credited, sku_id=pack.discord_sku_id, discord_user_id=user)
    entitlement_claw_back(entitlement_id=refunded, sku_id=pack.discord_sku_id, discord_user_id=user)
    url = "/admin/discordbot/entitlementpurchase/"

    listing = operator.get(url)
    found = operator.get(url, {"q": str(credited)})
    words = operator.get(url, {"q": "not a number"})
    page = operator.get(f"{url}{EntitlementPurchase.objects.get(entitlement_id=credited).pk}/change/")

    assert listing.status_code == 200
    text = listing.content.decode()
    assert str(credited) in text and "credited, not yet consumed" in text and "refunded before it was credited" in text
    assert found.status_code == 200 and str(refunded) not in found.content.decode()
    assert words.status_code == 200
    assert page.status_code == 200 and "entitlement:" in page.content.decode()
    assert operator.post(f"{url}add/").status_code == 403
