"""Storefront views: parse the request, call one service, render. The rules live in `storefront.services`."""

import json
import logging
from datetime import date
from urllib.parse import urlencode

import stripe
from django.conf import settings
from django.db import connection, transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from storefront import eventqueue, pagecache, selectors, services, webhooks
from storefront.context_processors import shop_context
from storefront.errors import CheckoutError
from storefront.models import LegalPage, Order
from storefront.payments import payments_test_mode
from storefront.ratelimit import Limit, rate_limit_exceeded
from storefront.tokens import BuyFor, BuyTokenError, buy_token_open
from vouchers.pricing import price_qualities, price_range, price_table

logger = logging.getLogger(__name__)

# The "payment processing" page reloads itself after 5 s, then waits twice as long each time up to a minute,
# and stops reloading after MAX_REFRESHES (about a quarter of an hour); "Check now" still works.
PENDING_REFRESH_SECONDS = 5
MAX_REFRESH_SECONDS = 60
MAX_REFRESHES = 15


def _refresh_after(attempt: int) -> int | None:
    if attempt >= MAX_REFRESHES:
        return None
    return min(PENDING_REFRESH_SECONDS * 2 ** min(attempt, 10), MAX_REFRESH_SECONDS)


def _too_many(request: HttpRequest, *, scope: str, setting: str) -> HttpResponse | None:
    retry_after = rate_limit_exceeded(request, scope=scope, limit=Limit.parse(getattr(settings, setting)))
    if not retry_after:
        return None
    message = f"Too many requests from your connection. Please wait {retry_after} seconds and try again."
    response = _page(request, "storefront/checkout_error.html", {"message": message}, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def _page(request: HttpRequest, template: str, context: dict, *, status: int = 200) -> HttpResponse:
    """Render a storefront page; every page carries the TEST MODE banner when the test backend is on."""
    return render(request, template, {"test_mode": payments_test_mode(), **context}, status=status)


def _buy_token(source: QueryDict) -> tuple[str, BuyFor | None, str]:
    """The `/buy` token from the bot's link: (token, whom it credits, problem to show)."""
    token = source.get("for", "").strip()
    if not token:
        return "", None, ""
    try:
        return token, buy_token_open(token=token), ""
    except BuyTokenError as exc:
        return "", None, str(exc)


def packs_url(buy_token: str = "") -> str:
    """The pack list; for a `/buy` buyer who already confirmed the account, straight to its packs."""
    url = reverse("pack_list")
    return f"{url}?{urlencode({'for': buy_token, 'confirmed': '1'})}" if buy_token else url


@require_GET
def pack_list(request: HttpRequest) -> HttpResponse:
    """The packs. A `/buy` link first names the Discord account it credits and asks the buyer to confirm it,
    so a link passed on by someone else is not paid by mistake.

    Without a query string the page is the same for everyone but the form's CSRF token: it comes from this
    process's cache (storefront/pagecache.py), keyed by everything on it that can change (packs, gallery,
    settings), with the visitor's own token put in.
    """
    if request.GET:
        return _pack_list_render(request)
    key = (
        selectors.pack_list_version(),
        payments_test_mode(),
        tuple(shop_context().items()),
        repr(settings.GENERATION_COSTS),  # the price table (fixed in production; tests change it)
        date.today().year,  # the footer's year
    )
    return pagecache.pages.respond(
        request, name="pack_list", key=key, render=lambda token: _pack_list_render(request, csrf_token=token)
    )


def _pack_list_render(request: HttpRequest, *, csrf_token: str | None = None) -> HttpResponse:
    buy_token, buy_for, token_problem = _buy_token(request.GET)
    confirmed = buy_for is not None and request.GET.get("confirmed") == "1"
    context = {
        "packs": selectors.packs_for_sale(),
        "buy_token": buy_token if confirmed else "",
        "buy_for": buy_for,
        "confirm_token": buy_token if buy_for is not None and not confirmed else "",
        "confirm_url": packs_url(buy_token) if buy_for is not None else "",
        "token_problem": token_problem,
        "qualities": price_qualities(),
        "price_rows": price_table(),
        "price_min": price_range()[0],
        "price_max": price_range()[1],
        "samples": selectors.gallery_for_display(),
    }
    if csrf_token is not None:
        context["csrf_token"] = csrf_token  # the cache's placeholder, replaced per response
    return _page(request, "storefront/pack_list.html", context)


@require_http_methods(["GET", "HEAD", "POST"])
def checkout(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        # A reload or a shared link of /checkout/: nothing to do here but pick a pack.
        buy_token, buy_for, _ = _buy_token(request.GET)
        return HttpResponseRedirect(packs_url(buy_token if buy_for else ""), status=303)
    limited = _too_many(request, scope="checkout", setting="CHECKOUT_RATE_LIMIT")
    if limited:
        return limited
    try:
        start = services.checkout_start(pack_id=request.POST.get("pack"), buy_token=request.POST.get("for", "").strip())
    except CheckoutError as exc:
        buy_token = _buy_token(request.POST)[0]
        context = {"message": exc.message, "buy_token": buy_token, "packs_url": packs_url(buy_token)}
        return _page(request, "storefront/checkout_error.html", context, status=exc.http_status)
    # 303: the browser follows with a GET, to Stripe Checkout (or the local test-mode page).
    return HttpResponseRedirect(start.url, status=303)


@never_cache
@require_GET
def checkout_success(request: HttpRequest) -> HttpResponse:
    limited = _too_many(request, scope="success", setting="SUCCESS_PAGE_RATE_LIMIT")
    if limited:
        return limited
    session_id = request.GET.get("session_id", "")
    attempt = request.GET.get("n", "")
    attempt = int(attempt) if attempt.isdigit() and len(attempt) < 4 else 0
    refresh = _refresh_after(attempt)
    refresh_url = "?" + urlencode({"session_id": session_id, "n": attempt + 1})
    try:
        result = services.order_success_lookup(session_id=session_id)
    except CheckoutError as exc:
        if exc.http_status == 404:
            return _page(request, "storefront/order_unknown.html", {"message": exc.message}, status=404)
        if exc.http_status == 409:
            return _page(request, "storefront/checkout_error.html", {"message": exc.message}, status=409)
        # Stripe could not be asked: the payment may well be fine, so keep checking.
        context = {"state": "unconfirmed", "message": exc.message, "refresh": refresh, "refresh_url": refresh_url}
        return _page(request, "storefront/success.html", context, status=exc.http_status)
    order = result.order
    if result.voucher is not None:
        state = "refunded" if order.status == Order.Status.REFUNDED else "paid"
    elif order.status in (Order.Status.EXPIRED, Order.Status.FAILED):
        state = order.status
    else:
        state = "processing"
    context = {
        "state": state,
        "order": order,
        "voucher": result.voucher,
        "redeemed_to_discord": result.redeemed_to_discord,
        "refresh": refresh if state == "processing" else None,
        "refresh_url": refresh_url,
        # Promotion codes and tax can make the charge differ from the pack's price; Stripe's receipt has it.
        "charge_may_differ": settings.STRIPE_CHECKOUT_PROMOTION_CODES or settings.STRIPE_CHECKOUT_AUTOMATIC_TAX,
    }
    return _page(request, "storefront/success.html", context)


@require_GET
def checkout_cancel(request: HttpRequest) -> HttpResponse:
    buy_token, _, _ = _buy_token(request.GET)
    return _page(request, "storefront/cancel.html", {"buy_token": buy_token, "packs_url": packs_url(buy_token)})


@require_GET
def legal_page(request: HttpRequest, kind: str) -> HttpResponse:
    """Terms, privacy or refunds: the operator's wording from the admin (seeded with defaults)."""
    page = selectors.legal_page(kind=LegalPage.Kind(kind))
    return _page(request, "storefront/legal.html", {"page": page})


@require_GET
def gallery_image(request: HttpRequest, pk: int, digest: str) -> HttpResponse:
    """A sample image's bytes. Its URL names its digest, so it can be cached for good."""
    sample = selectors.gallery_image(pk=pk, digest=digest)
    if sample is None:
        raise Http404("No such image.")
    response = HttpResponse(bytes(sample.image), content_type=sample.content_type)
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


def server_error(request: HttpRequest) -> HttpResponse:
    """The branded 500 page. Settings only (no database, no session): whatever broke may still be broken."""
    try:
        return render(request, "500.html", shop_context(), status=500)
    except Exception:  # the template itself failing must not turn a 500 into a crash loop
        logger.exception("The 500 page could not be rendered.")
        return HttpResponse("Server error. Please try again in a minute.", status=500, content_type="text/plain")


@never_cache
@require_http_methods(["GET", "POST"])
def checkout_test(request: HttpRequest, session_id: str) -> HttpResponse:
    """The built-in test-mode checkout page (PAYMENTS_BACKEND=test, DEBUG only): Pay or Cancel, no money."""
    if not payments_test_mode():
        raise Http404("Test-mode checkout is off.")
    order = selectors.order_by_session(session_id=session_id)
    if order is None:
        raise Http404("No such checkout.")
    success = f"{reverse('checkout_success')}?session_id={session_id}"
    if request.method == "POST":
        if request.POST.get("action") == "cancel":
            return redirect("checkout_cancel")
        try:
            services.order_test_pay(session_id=session_id, email=request.POST.get("email", ""))
        except CheckoutError as exc:
            context = {"order": order, "error": exc.message, "email": request.POST.get("email", "")}
            return _page(request, "storefront/test_checkout.html", context, status=exc.http_status)
        return HttpResponseRedirect(success, status=303)
    if order.status != Order.Status.PENDING:
        return HttpResponseRedirect(success, status=303)
    return _page(request, "storefront/test_checkout.html", {"order": order})


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Stripe's events. Verified on the raw body; anything forged, stale or malformed is refused (400), unwritten.

    A verified event is stored (storefront/webhooks.py) and answered 200 at once; a redelivery answers 200 too.
    """
    try:
        # What `stripe.Webhook.construct_event` does, without building StripeObjects only to turn them back into a
        # dict (about 0.7 ms of CPU a delivery): the signature and its age (Stripe's 5-minute tolerance), then JSON.
        payload = request.body.decode("utf-8")
        stripe.WebhookSignature.verify_header(
            payload,
            request.headers["stripe-signature"],
            settings.STRIPE_WEBHOOK_SECRET,
            stripe.Webhook.DEFAULT_TOLERANCE,
        )
        event = json.loads(payload)
        event_id, event_type = event["id"], event["type"]
        data_object = event["data"]["object"]
        if not isinstance(data_object, dict):
            raise TypeError("data.object is not an object")
    except (KeyError, ValueError, TypeError, AttributeError, stripe.SignatureVerificationError) as exc:
        logger.warning("Refused a Stripe webhook request: %s", type(exc).__name__)
        return HttpResponse(status=400)
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 255):
        return HttpResponse(status=400)
    if not (isinstance(event_type, str) and 0 < len(event_type) <= 100):
        return HttpResponse(status=400)
    # Acknowledge, then process: answered once the event is stored; a processor thread does the work.
    if webhooks.acknowledge(event_id=event_id, event_type=event_type, data_object=data_object):
        transaction.on_commit(lambda: eventqueue.hand_off(event_id))
        return HttpResponse("queued", content_type="text/plain")
    return HttpResponse("ok", content_type="text/plain")


def healthz(request: HttpRequest) -> HttpResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # any database failure means "unhealthy"; details stay in the logs
        return JsonResponse({"status": "unavailable"}, status=503)
    return JsonResponse({"status": "ok"})
