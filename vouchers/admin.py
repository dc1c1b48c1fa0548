"""Operator admin for vouchers, accounts and the ledger.

Every change of credits goes through `vouchers.services` (so the ledger records it); the ledger itself is
read-only here, as it is everywhere. Each consequential action needs its own permission, checked on every path
(see `vouchers.admin_base`): issuing (`vouchers.issue_voucher`), voiding (`vouchers.void_voucher`), granting
(`vouchers.grant_credits`), debiting (`vouchers.debit_credits`). Codes are shown in full only with
`vouchers.see_voucher_code`. Every action records who did it, when and why: in the ledger memo for credit
movements, and in the admin log for all of them.
"""

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from vouchers import services
from vouchers.admin_base import (
    GuardedAdmin,
    ReadOnlyAdmin,
    can_see_codes,
    column,
    member_id,
    member_label,
    moment,
    require_perm,
    shown_code,
    shown_text,
)
from vouchers.errors import VoucherError
from vouchers.models import CreditAccount, LedgerEntry, Voucher

ISSUE = "vouchers.issue_voucher"
VOID = "vouchers.void_voucher"
GRANT = "vouchers.grant_credits"
DEBIT = "vouchers.debit_credits"


def attributed(memo: str, request: HttpRequest) -> str:
    """The operator's reason with their name, cut to what the ledger holds."""
    return f"{memo} (by {request.user.get_username()})"[: services.MAX_MEMO_LENGTH]


class ReasonForm(forms.Form):
    """The "why" every consequential action asks for; it goes into the ledger memo or the admin log."""

    memo = forms.CharField(
        max_length=services.MAX_MEMO_LENGTH - 40, label="Reason", help_text="Why: this is recorded with your name."
    )


class GrantCreditsForm(ReasonForm):
    amount = forms.IntegerField(min_value=1, max_value=services.MAX_CREDITS_PER_MOVEMENT, label="Credits")
    field_order = ["amount", "memo"]


class DebitCreditsForm(GrantCreditsForm):
    """The same shape as a grant: how many credits, and why (required; the ledger refuses a debit without one)."""


def action_form_page(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    action: str,
    title: str,
    intro: str,
    form: forms.Form,
    objects: list[tuple[int, str]],
    submit: str,
) -> TemplateResponse:
    """The intermediate page of an action that asks for input (a reason, an amount) before it acts."""
    return TemplateResponse(
        request,
        "admin/action_form.html",
        {
            **model_admin.admin_site.each_context(request),
            "title": title,
            "intro": intro,
            "form": form,
            "objects": objects,
            "action": action,
            "submit": submit,
            "opts": model_admin.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        },
    )


class VoucherIssueForm(forms.ModelForm):
    credits = forms.IntegerField(min_value=1, max_value=services.MAX_CREDITS_PER_MOVEMENT)
    note = forms.CharField(
        max_length=services.MAX_MEMO_LENGTH - 40,
        label="Reason",
        help_text="Who it is for and why (kept on the voucher, with your name).",
    )

    class Meta:
        model = Voucher
        fields = ["credits", "note"]


@admin.register(Voucher)
class VoucherAdmin(GuardedAdmin):
    list_filter = ["status", "created_at", "redeemed_at"]
    search_fields = [
        "code",
        "redeemed_by__discord_user_id",
        "order__email",
        "order__stripe_session_id",
        "note",
    ]
    # A Checkout Session id opens the success page, which shows the code: as secret as the code itself.
    code_search_fields = ("code", "order__stripe_session_id")
    exact_code_lookups = ("code",)
    exact_secret_lookups = ("order__stripe_session_id",)
    member_id_lookup = "redeemed_by__discord_user_id"
    email_lookups = ("order__email",)
    actions = ["void_vouchers"]
    list_select_related = ["redeemed_by", "order"]

    def get_list_display(self, request: HttpRequest):
        return [
            column(request, "code", lambda v: shown_code(request, v.code), ordering="code", css="code"),
            "credits",
            "status",
            member_id("redeemed_by", "redeemed by"),
            moment("redeemed_at", "redeemed"),
            column(request, "order", lambda v: f"#{v.order_id}" if v.order_id else "\N{EN DASH}", ordering="order"),
            column(request, "note", lambda v: shown_text(request, v.note)),
            moment("created_at"),
        ]

    def get_list_display_links(self, request, list_display):
        return list_display[:1]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = VoucherIssueForm
        return super().get_form(request, obj, change, **kwargs)

    def _code_field(self, request: HttpRequest):
        return column(request, "code", lambda v: shown_code(request, v.code), css="code")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["credits", "note"]
        return [
            self._code_field(request),
            "credits",
            "status",
            "note",
            "order",
            "redeemed_by",
            "redeemed_at",
            "refunded_at",
            "created_at",
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        # Credits of an existing voucher never change; its note may be edited (with `change_voucher`).
        fields = ["credits", "status", "order", "redeemed_by", "redeemed_at", "refunded_at", "created_at"]
        return [self._code_field(request), *fields]

    def get_fieldsets(self, request, obj=None):
        # One fieldset from get_fields, rebuilt per request so the code column is this request's closure.
        return [(None, {"fields": self.get_fields(request, obj)})]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ISSUE)

    def has_void_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(VOID)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # void instead: the ledger may point at it

    def save_model(self, request, obj: Voucher, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        require_perm(request, ISSUE)
        # The form has validated the bounds the service enforces; issuing goes through the service alone.
        # The admin log records the issue itself (who, when); the note keeps why.
        issued = services.voucher_issue(credits=obj.credits, note=attributed(obj.note, request))
        obj.pk, obj.code, obj.note, obj.created_at = issued.pk, issued.code, issued.note, issued.created_at
        obj._state.adding = False
        obj._state.db = issued._state.db

    @admin.action(description="Void selected vouchers (unredeemed only)", permissions=["void"])
    def void_vouchers(self, request: HttpRequest, queryset: QuerySet[Voucher]) -> HttpResponse | None:
        require_perm(request, VOID)
        form = ReasonForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return action_form_page(
                self,
                request,
                action="void_vouchers",
                title="Void vouchers",
                intro="A void voucher can never be redeemed. Redeemed vouchers are refused.",
                form=form,
                objects=[(v.pk, f"{shown_code(request, v.code)}: {v.credits} credits, {v.status}") for v in queryset],
                submit="Void vouchers",
            )
        memo = attributed(f"Voided: {form.cleaned_data['memo']}", request)
        voided, refused = 0, []
        for voucher in queryset:
            try:
                services.voucher_void(code=voucher.code, memo=memo)
            except VoucherError as exc:
                refused.append(f"{shown_code(request, voucher.code)}: {exc.message}")
                continue
            voided += 1
            self.log_change(request, voucher, memo)
        if voided:
            self.message_user(request, f"Voided {voided} voucher(s).", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)
        return None


INLINE_LEDGER_ROWS = 50


class LedgerEntryInline(admin.TabularInline):
    """The account's latest ledger entries (at most INLINE_LEDGER_ROWS; the page links to all of them)."""

    model = LedgerEntry
    fk_name = "account"
    ordering = ["-created_at", "-id"]
    extra = 0
    can_delete = False
    show_change_link = True

    def get_fields(self, request, obj=None):
        return [
            "created_at",
            "kind",
            "delta",
            column(
                request, "voucher", lambda e: shown_code(request, e.voucher.code if e.voucher else None), css="code"
            ),
            "generation",
            column(request, "memo", lambda e: shown_text(request, e.memo)),
        ]

    def get_queryset(self, request):
        entries = super().get_queryset(request).select_related("voucher", "generation")
        object_id = (request.resolver_match.kwargs if request.resolver_match else {}).get("object_id", "")
        if not str(object_id).isdigit():
            return entries.none()
        # A member of a year's standing has thousands of entries: one bounded page, newest first, by the index on
        # the account (a formset cannot take a sliced queryset, so the slice is a subquery of ids).
        latest = LedgerEntry.objects.filter(account_id=int(object_id)).order_by("-created_at", "-id")
        return entries.filter(pk__in=list(latest.values_list("pk", flat=True)[:INLINE_LEDGER_ROWS]))

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def get_fieldsets(self, request, obj=None):
        return [(None, {"fields": self.get_fields(request, obj)})]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class AccountGrantForm(forms.ModelForm):
    """Adding an account in the admin is granting credits to a Discord member (the account is created)."""

    amount = forms.IntegerField(min_value=1, max_value=services.MAX_CREDITS_PER_MOVEMENT, label="Credits")
    memo = forms.CharField(
        max_length=services.MAX_MEMO_LENGTH - 40, label="Reason", help_text="Why: this goes into the ledger."
    )

    class Meta:
        model = CreditAccount
        fields = ["discord_user_id"]

    def validate_unique(self) -> None:
        pass  # granting to an existing member is fine: the grant goes to their account


@admin.register(CreditAccount)
class CreditAccountAdmin(GuardedAdmin):
    list_display = [
        member_id("", "member"),
        "balance",
        "owed",
        moment("created_at"),
        moment("updated_at", "last change"),
    ]
    # The member's own columns by substring; their vouchers' codes and buyers' emails through `related_search`
    # (subqueries of one table each), not joins of every account to every voucher and order with a DISTINCT.
    search_fields = ["discord_user_id", "discord_name"]
    exact_code_lookups = ("redeemed_vouchers__code",)
    member_id_lookup = "discord_user_id"
    email_lookups = ("redeemed_vouchers__order__email",)
    readonly_fields = [
        "kind",
        "discord_user_id",
        "discord_guild_id",
        "discord_name",
        "balance",
        "owed",
        "created_at",
        "updated_at",
        "ledger",
    ]
    inlines = [LedgerEntryInline]
    actions = ["grant_credits", "debit_credits"]

    def related_search(self, request: HttpRequest, term: str) -> Q:
        vouchers = Voucher.objects.filter(redeemed_by__isnull=False)
        match = Q(pk__in=vouchers.filter(order__email__icontains=term).values("redeemed_by_id"))
        if can_see_codes(request):  # a part of a code finds its redeemer only for those who may see codes
            match |= Q(pk__in=vouchers.filter(code__icontains=term).values("redeemed_by_id"))
        return match

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = AccountGrantForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["discord_user_id", "amount", "memo"]
        return self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_inlines(self, request, obj=None):
        return self.inlines if obj is not None else []

    @admin.display(description="ledger")
    def ledger(self, account: CreditAccount) -> str:
        url = reverse("admin:vouchers_ledgerentry_changelist") + f"?account__id__exact={account.pk}"
        count = LedgerEntry.objects.filter(account=account).count()
        shown = min(count, INLINE_LEDGER_ROWS)
        return format_html('{} entries; the latest {} below. <a href="{}">All of them</a>', count, shown, url)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(GRANT)  # the add form is a grant

    def has_grant_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(GRANT)

    def has_debit_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(DEBIT)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # nothing about an account is edited by hand (so its page has no Save button)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def save_model(self, request, obj: CreditAccount, form, change: bool) -> None:
        require_perm(request, GRANT)
        entry = services.credits_grant(
            discord_user_id=form.cleaned_data["discord_user_id"],
            amount=form.cleaned_data["amount"],
            memo=attributed(form.cleaned_data["memo"], request),
        )
        account = entry.account
        obj.pk, obj.balance, obj.created_at = account.pk, account.balance, account.created_at
        obj._state.adding = False
        obj._state.db = account._state.db

    def construct_change_message(self, request, form, formsets, add=False):
        if add:
            return f"Granted {form.cleaned_data['amount']} credit(s): {form.cleaned_data['memo']}"
        return super().construct_change_message(request, form, formsets, add)

    def save_related(self, request, form, formsets, change) -> None:
        pass  # the account has no related rows an operator edits

    @admin.action(description="Grant credits to selected accounts", permissions=["grant"])
    def grant_credits(self, request: HttpRequest, queryset: QuerySet[CreditAccount]) -> HttpResponse | None:
        require_perm(request, GRANT)
        form = GrantCreditsForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return action_form_page(
                self,
                request,
                action="grant_credits",
                title="Grant credits",
                intro="Each grant is a ledger entry carrying your reason and your name.",
                form=form,
                objects=[(a.pk, f"{member_label(a)} (balance {a.balance})") for a in queryset],
                submit="Grant credits",
            )
        amount, memo = form.cleaned_data["amount"], attributed(form.cleaned_data["memo"], request)
        granted = 0
        for account in queryset:
            try:
                services.credits_grant(discord_user_id=account.discord_user_id, amount=amount, memo=memo)
            except VoucherError as exc:
                self.message_user(request, f"{account.discord_user_id}: {exc.message}", messages.ERROR)
                continue
            granted += 1
            self.log_change(request, account, f"Granted {amount} credit(s): {memo}")
        self.message_user(request, f"Granted {amount} credit(s) to {granted} account(s).", messages.SUCCESS)
        return None

    @admin.action(description="Debit credits from selected accounts", permissions=["debit"])
    def debit_credits(self, request: HttpRequest, queryset: QuerySet[CreditAccount]) -> HttpResponse | None:
        require_perm(request, DEBIT)
        form = DebitCreditsForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return action_form_page(
                self,
                request,
                action="debit_credits",
                title="Debit credits",
                intro=(
                    "Takes credits back (a mistaken grant, abuse). A balance never goes below zero: an account "
                    "holding less than the amount is refused and keeps its credits. Each debit is a ledger entry "
                    "carrying your reason and your name."
                ),
                form=form,
                objects=[(a.pk, f"{member_label(a)} (balance {a.balance})") for a in queryset],
                submit="Debit credits",
            )
        amount, memo = form.cleaned_data["amount"], attributed(form.cleaned_data["memo"], request)
        debited = 0
        for account in queryset:
            try:
                services.credits_debit(discord_user_id=account.discord_user_id, amount=amount, memo=memo)
            except VoucherError as exc:
                self.message_user(request, f"{account.discord_user_id}: {exc.message}", messages.ERROR)
                continue
            debited += 1
            self.log_change(request, account, f"Debited {amount} credit(s): {memo}")
        if debited:
            self.message_user(request, f"Debited {amount} credit(s) from {debited} account(s).", messages.SUCCESS)
        return None


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_filter = ["kind", "created_at"]
    search_fields = ["account__discord_user_id", "account__discord_name", "voucher__code", "memo"]
    member_id_lookup = "account__discord_user_id"
    # A memo may hold a code ("Redeemed K7QH-..."), so a substring search of memos would reveal it too.
    code_search_fields = ("voucher__code", "memo")
    exact_code_lookups = ("voucher__code",)
    list_select_related = ["account", "voucher", "generation"]

    def get_list_display(self, request: HttpRequest):
        return [
            moment("created_at", "when"),
            member_id("account"),
            "kind",
            "delta",
            column(
                request, "voucher", lambda e: shown_code(request, e.voucher.code if e.voucher else None), css="code"
            ),
            column(request, "generation", lambda e: f"#{e.generation_id}" if e.generation_id else "\N{EN DASH}"),
            self._memo(request),
        ]

    def _memo(self, request: HttpRequest):
        return column(request, "memo", lambda e: shown_text(request, e.memo))

    def get_fields(self, request, obj=None):
        return [
            "created_at",
            "account",
            "kind",
            "delta",
            "voucher",
            "generation",
            "refund_of",
            self._memo(request),
        ]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def get_fieldsets(self, request, obj=None):
        return [(None, {"fields": self.get_fields(request, obj)})]
