"""Storefront views: parse the request, call one service, render. The rules live in `storefront.services`."""

import logging
from urllib.parse import urlencode

import stripe
from django.conf import settings
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from storefront import selectors, services, webhooks
from storefront.errors import CheckoutError
from storefront.models import Order
from storefront.payments import payments_test_mode
from storefront.ratelimit import Limit, rate_limit_exceeded
from storefront.tokens import BuyTokenError, buy_token_read

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


def _buy_token(source: QueryDict) -> tuple[str, int | None, str]:
    """The `/buy` token from the bot's link: (token, Discord user id, problem to show)."""
    token = source.get("for", "").strip()
    if not token:
        return "", None, ""
    try:
        return token, buy_token_read(token=token), ""
    except BuyTokenError as exc:
        return "", None, str(exc)


@require_GET
def pack_list(request: HttpRequest) -> HttpResponse:
    buy_token, discord_user_id, token_problem = _buy_token(request.GET)
    context = {
        "packs": selectors.packs_for_sale(),
        "buy_token": buy_token,
        "for_discord": discord_user_id is not None,
        "token_problem": token_problem,
    }
    return _page(request, "storefront/pack_list.html", context)


@require_POST
def checkout(request: HttpRequest) -> HttpResponse:
    limited = _too_many(request, scope="checkout", setting="CHECKOUT_RATE_LIMIT")
    if limited:
        return limited
    try:
        start = services.checkout_start(pack_id=request.POST.get("pack"), buy_token=request.POST.get("for", "").strip())
    except CheckoutError as exc:
        context = {"message": exc.message, "buy_token": _buy_token(request.POST)[0]}
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
        if exc.http_status in (404, 409):
            return _page(request, "storefront/checkout_error.html", {"message": exc.message}, status=exc.http_status)
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
    }
    return _page(request, "storefront/success.html", context)


@require_GET
def checkout_cancel(request: HttpRequest) -> HttpResponse:
    buy_token, _, _ = _buy_token(request.GET)
    return _page(request, "storefront/cancel.html", {"buy_token": buy_token})


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
    """Stripe's events. Verified on the raw body; anything forged, stale or malformed is refused (400), unwritten."""
    try:
        event = stripe.Webhook.construct_event(
            request.body, request.headers["stripe-signature"], settings.STRIPE_WEBHOOK_SECRET
        )
        event_id, event_type = event["id"], event["type"]
        data_object = event["data"]["object"].to_dict()
    except (KeyError, ValueError, TypeError, AttributeError, stripe.SignatureVerificationError) as exc:
        logger.warning("Refused a Stripe webhook request: %s", type(exc).__name__)
        return HttpResponse(status=400)
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 255):
        return HttpResponse(status=400)
    if not (isinstance(event_type, str) and 0 < len(event_type) <= 100):
        return HttpResponse(status=400)
    return webhooks.dispatch(event_id=event_id, event_type=event_type, data_object=data_object)


def healthz(request: HttpRequest) -> HttpResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # any database failure means "unhealthy"; details stay in the logs
        return JsonResponse({"status": "unavailable"}, status=503)
    return JsonResponse({"status": "ok"})
