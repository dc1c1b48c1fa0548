"""Reads the storefront's views share."""

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from django.urls import reverse
from django.utils.safestring import SafeString

from storefront.legal import DEFAULT_BODIES, DEFAULT_TITLES, legal_fill, legal_render
from storefront.models import CreditPack, LegalPage, Order, SampleImage
from vouchers.pricing import images_for_credits


def packs_for_sale() -> list[CreditPack]:
    """Active packs in display order, each with `images`: what it buys by size and quality (the bot's prices).

    The cheapest per credit is flagged `best_value` when there is a choice.
    """
    packs = list(CreditPack.objects.filter(active=True))
    for pack in packs:
        pack.best_value = False
        pack.images = images_for_credits(credits=pack.credits)
    if len(packs) > 1 and len({p.currency for p in packs}) == 1:
        best = min(packs, key=lambda p: (Fraction(p.price_cents, p.credits), -p.credits))
        best.best_value = True
    return packs


def order_by_session(*, session_id: str) -> Order | None:
    if not session_id or len(session_id) > 255:
        return None
    return Order.objects.select_related("pack").filter(stripe_session_id=session_id).first()


@dataclass(frozen=True)
class LegalPageView:
    kind: str
    title: str
    html: SafeString
    updated_at: datetime | None


def legal_page(*, kind: LegalPage.Kind) -> LegalPageView:
    """The operator's wording for a legal page, or the default when the row was deleted or left empty."""
    page = LegalPage.objects.filter(kind=kind).first()
    title = (page.title.strip() if page else "") or DEFAULT_TITLES[kind]
    body = (page.body if page else "").strip() or DEFAULT_BODIES[kind]
    return LegalPageView(
        kind=kind,
        title=legal_fill(title),
        html=legal_render(legal_fill(body)),
        updated_at=page.updated_at if page and page.body.strip() else None,
    )


@dataclass(frozen=True)
class GallerySample:
    url: str
    prompt: str
    size: str
    quality: str
    width: int
    height: int


def gallery_for_display() -> list[GallerySample]:
    """The active sample images, in order, without their bytes (the page links to each)."""
    rows = SampleImage.objects.filter(active=True).values_list(
        "pk", "digest", "prompt", "size", "quality", "width", "height"
    )
    return [
        GallerySample(
            url=reverse("gallery_image", kwargs={"pk": pk, "digest": digest}),
            prompt=prompt,
            size=size,
            quality=quality,
            width=width,
            height=height,
        )
        for pk, digest, prompt, size, quality, width, height in rows
    ]


def gallery_image(*, pk: int, digest: str) -> SampleImage | None:
    # The digest in the URL is what makes it findable; inactive images stay viewable for the admin preview.
    return SampleImage.objects.filter(pk=pk, digest=digest).first()
