"""Money at a glance: the admin page with a period's revenue, credits and images, and its CSV exports.

It lives in the project package because it reads all three apps (through their selectors); vouchers never
imports the apps built on it. Both views need `storefront.view_dashboard`; voucher codes and Checkout Session ids
in the exports are masked unless the user may also see codes (`vouchers.see_voucher_code`).
"""

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from discordbot import selectors as image_selectors
from storefront import charts
from storefront import selectors as shop_selectors
from storefront.money import format_money
from storefront.spreadsheet import csv_cell
from vouchers import selectors as credit_selectors
from vouchers.admin_base import can_see_codes, mask_secret, require_perm
from vouchers.codes import mask_code, mask_codes_in

VIEW_DASHBOARD = "storefront.view_dashboard"
DEFAULT_DAYS = 30
MAX_DAYS = 731


@dataclass(frozen=True)
class Period:
    """Whole UTC days from `first` to `last`, both included."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time.min, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time.min, tzinfo=UTC)

    @property
    def query(self) -> str:
        return f"start={self.first.isoformat()}&end={self.last.isoformat()}"


class PeriodForm(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From")
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To (included)")

    def clean(self) -> dict:
        data = super().clean()
        last = data.get("end") or timezone.now().astimezone(UTC).date()
        first = data.get("start") or last - timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            raise forms.ValidationError("The period must start on or before its last day.")
        if (last - first).days + 1 > MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
        data["period"] = Period(first, last)
        return data


def money(cents: int, currency: str) -> str:
    """`format_money` with the sign in front: a period's net can be negative."""
    return "-" + format_money(-cents, currency) if cents < 0 else format_money(cents, currency)


def period_from(request: HttpRequest) -> tuple[Period, PeriodForm]:
    """The period asked for, or the last 30 days (with the form's errors shown) when the input is not valid."""
    form = PeriodForm(request.GET or None)
    if form.is_bound and form.is_valid():
        return form.cleaned_data["period"], form
    today = timezone.now().astimezone(UTC).date()
    return Period(today - timedelta(days=DEFAULT_DAYS - 1), today), form


def dollars(micros: int | None, places: int = 2) -> str:
    """Micro-dollars as US dollars: `1_234_567` -> `$1.23` (or `$1.2346` with `places=4`), sign in front."""
    if micros is None:
        return "\N{EN DASH}"
    value = (Decimal(abs(micros)) / image_selectors.MICROS_PER_DOLLAR).quantize(Decimal(1).scaleb(-places))
    return f"{'-' if micros < 0 else ''}${value:,}"


def image_cost_context(revenue: list, images: image_selectors.ImageFigures) -> dict:
    """Image cost, per delivered image, margin (USD: net revenue minus image cost), and today's spend guard.

    The image service bills in US dollars; revenue in other currencies is not converted, so the margin is the
    USD one and says so when other currencies sold too.
    """
    usd = next((r for r in revenue if r.currency == "usd"), None)
    net_micros = (usd.net_cents if usd else 0) * (image_selectors.MICROS_PER_DOLLAR // 100)
    today = image_selectors.spend_today()
    return {
        "cost": dollars(images.spend_micros),
        "per_image": dollars(images.spend_per_delivered_micros, 4),
        "margin_micros": net_micros - images.spend_micros,
        "margin": dollars(net_micros - images.spend_micros),
        "other_currencies": sorted(r.currency.upper() for r in revenue if r.currency != "usd"),
        "today": dollars(today.micros, 4),
        "today_micros": today.micros,
        "budget": dollars(today.budget_micros) if today.budget_micros is not None else "",
        "guard_on": today.budget_micros is not None,
        "reached": today.reached,
    }


def dashboard_view(request: HttpRequest) -> HttpResponse:
    require_perm(request, VIEW_DASHBOARD)
    period, form = period_from(request)
    start, end = period.start, period.end
    revenue = shop_selectors.revenue_figures(start=start, end=end)
    credits = credit_selectors.credit_figures(start=start, end=end)
    images = image_selectors.image_figures(start=start, end=end)
    revenue_daily = shop_selectors.revenue_daily(start=start, end=end)
    revenue_rows = [
        {
            "currency": r.currency.upper(),
            "paid_orders": r.paid_orders,
            "revenue": money(r.revenue_cents, r.currency),
            "refunded_orders": r.refunded_orders,
            "refund_count": r.refunds,
            "refunds": money(r.refunds_cents, r.currency),
            "disputes_opened": r.disputes_opened,
            "disputes_opened_amount": money(r.disputes_opened_cents, r.currency),
            "disputes_lost": r.disputes_lost,
            "disputes_lost_amount": money(r.disputes_lost_cents, r.currency),
            "disputes_won": r.disputes_won,
            "disputes_won_amount": money(r.disputes_won_cents, r.currency),
            "net_cents": r.net_cents,
            "net": money(r.net_cents, r.currency),
            "chart": charts.daily_bars(
                revenue_daily.get(r.currency, {}),
                start=period.first,
                end=period.last,
                label=f"Revenue per day ({r.currency.upper()})",
                fmt=lambda cents, c=r.currency: money(cents, c),
            ),
        }
        for r in revenue
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Money at a glance",
        "form": form,
        "period": period,
        "presets": [
            (n, f"start={(period.last - timedelta(days=n - 1)).isoformat()}&end={period.last}") for n in (7, 30, 90)
        ],
        "revenue_rows": revenue_rows,
        "credits": credits,
        "images": images,
        "spend": image_cost_context(revenue, images),
        "spent_chart": charts.daily_bars(
            credit_selectors.credits_spent_daily(start=start, end=end),
            start=period.first,
            end=period.last,
            label="Credits spent on images per day",
        ),
        "images_chart": charts.daily_bars(
            image_selectors.images_delivered_daily(start=start, end=end),
            start=period.first,
            end=period.last,
            label="Images delivered per day",
        ),
        "exports": list(EXPORTS),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


# --- CSV exports --------------------------------------------------------------------------------------------


def _orders(request: HttpRequest, period: Period):
    see = can_see_codes(request)
    yield [
        "id", "created_at", "paid_at", "status", "pack", "credits", "amount_cents", "currency", "email",
        "discord_user_id", "voucher_code", "voucher_status", "stripe_session_id", "payment_intent_id",
    ]  # fmt: skip
    for o in shop_selectors.orders_in_period(start=period.start, end=period.end).iterator(chunk_size=1000):
        voucher = getattr(o, "voucher", None)
        code = voucher.code if voucher else ""
        session = o.stripe_session_id or ""
        yield [
            o.pk, o.created_at, o.paid_at, o.status, o.pack.name, o.credits, o.amount_cents, o.currency, o.email,
            o.discord_user_id, code if see else mask_code(code), voucher.status if voucher else "",
            session if see else mask_secret(session), o.payment_intent_id,
        ]  # fmt: skip


def _ledger(request: HttpRequest, period: Period):
    see = can_see_codes(request)
    yield [
        "id",
        "created_at",
        "discord_user_id",
        "kind",
        "delta",
        "voucher_code",
        "generation_id",
        "refund_of_id",
        "memo",
    ]
    for e in credit_selectors.ledger_in_period(start=period.start, end=period.end).iterator(chunk_size=1000):
        code = e.voucher.code if e.voucher else ""
        yield [
            e.pk, e.created_at, e.account.discord_user_id, e.kind, e.delta, code if see else mask_code(code),
            e.generation_id, e.refund_of_id, e.memo if see else mask_codes_in(e.memo),
        ]  # fmt: skip


def _generations(request: HttpRequest, period: Period):
    yield [
        "id", "created_at", "started_at", "finished_at", "discord_user_id", "status", "size", "quality", "model",
        "cost_credits", "prompt", "error", "channel_id", "message_id", "image_spend_micros",
    ]  # fmt: skip
    for g in image_selectors.generations_in_period(start=period.start, end=period.end).iterator(chunk_size=1000):
        yield [
            g.pk, g.created_at, g.started_at, g.finished_at, g.account.discord_user_id, g.status, g.size, g.quality,
            g.model, g.cost, g.prompt, g.error, g.channel_id, g.message_id, g.image_spend_micros,
        ]  # fmt: skip


EXPORTS = {"orders": _orders, "ledger": _ledger, "generations": _generations}


class _Echo:
    def write(self, value: str) -> str:
        return value


def export_view(request: HttpRequest, kind: str) -> HttpResponse:
    require_perm(request, VIEW_DASHBOARD)
    rows = EXPORTS.get(kind)
    if rows is None:
        raise Http404("No such export.")
    period, form = period_from(request)
    if form.is_bound and not form.is_valid():
        return HttpResponse("\n".join(e for errors in form.errors.values() for e in errors), status=400)
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(
        (writer.writerow([csv_cell(v) for v in row]) for row in rows(request, period)), content_type="text/csv"
    )
    filename = f"{kind}-{period.first.isoformat()}-to-{period.last.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
