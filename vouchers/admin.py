"""Operator admin for vouchers, accounts and the ledger.

Every change of credits goes through `vouchers.services` (so the ledger records it); the ledger itself is
read-only here, as it is everywhere.
"""

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from vouchers import services
from vouchers.admin_base import ReadOnlyAdmin
from vouchers.errors import VoucherError
from vouchers.models import CreditAccount, LedgerEntry, Voucher


class VoucherIssueForm(forms.ModelForm):
    credits = forms.IntegerField(min_value=1, max_value=services.MAX_CREDITS_PER_MOVEMENT)

    class Meta:
        model = Voucher
        fields = ["credits", "note"]


@admin.register(Voucher)
class VoucherAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "credits",
        "status",
        "redeemed_by",
        "redeemed_at",
        "order",
        "note",
        "created_at",
    ]
    list_filter = ["status", "created_at", "redeemed_at"]
    search_fields = [
        "code",
        "redeemed_by__discord_user_id",
        "order__email",
        "order__stripe_session_id",
        "note",
    ]
    readonly_fields = [
        "code",
        "status",
        "order",
        "redeemed_by",
        "redeemed_at",
        "refunded_at",
        "created_at",
    ]
    actions = ["void_vouchers"]
    list_select_related = ["redeemed_by", "order"]

    def get_search_results(self, request, queryset, search_term):
        # Operators paste codes the way customers type them; find them in their canonical form too.
        from vouchers.codes import normalize_code

        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        canonical = normalize_code(search_term)
        if canonical:
            queryset |= self.model.objects.filter(code=canonical)
        return queryset, may_have_duplicates

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = VoucherIssueForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["credits", "note"]
        return [
            "code",
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
        # Credits of an existing voucher never change; its note may be edited.
        return [*self.readonly_fields, "credits"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # void instead: the ledger may point at it

    def save_model(self, request, obj: Voucher, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # The form has validated the bounds the service enforces; issuing goes through the service alone.
        issued = services.voucher_issue(credits=obj.credits, note=obj.note)
        obj.pk, obj.code, obj.created_at = issued.pk, issued.code, issued.created_at
        obj._state.adding = False
        obj._state.db = issued._state.db

    @admin.action(description="Void selected vouchers (unredeemed only)")
    def void_vouchers(self, request: HttpRequest, queryset: QuerySet[Voucher]) -> None:
        voided, refused = 0, []
        for code in queryset.values_list("code", flat=True):
            try:
                services.voucher_void(code=code, memo=f"Voided by {request.user.get_username()}")
                voided += 1
            except VoucherError as exc:
                refused.append(f"{code}: {exc.message}")
        if voided:
            self.message_user(request, f"Voided {voided} voucher(s).", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    fk_name = "account"
    fields = ["created_at", "kind", "delta", "voucher", "generation", "memo"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class GrantCreditsForm(forms.Form):
    amount = forms.IntegerField(min_value=1, max_value=services.MAX_CREDITS_PER_MOVEMENT, label="Credits")
    memo = forms.CharField(max_length=services.MAX_MEMO_LENGTH, help_text="Why: this goes into the ledger.")


class AccountGrantForm(forms.ModelForm):
    """Adding an account in the admin is granting credits to a Discord member (the account is created)."""

    amount = forms.IntegerField(min_value=1, max_value=services.MAX_CREDITS_PER_MOVEMENT, label="Credits")
    memo = forms.CharField(max_length=services.MAX_MEMO_LENGTH, help_text="Why: this goes into the ledger.")

    class Meta:
        model = CreditAccount
        fields = ["discord_user_id"]

    def validate_unique(self) -> None:
        pass  # granting to an existing member is fine: the grant goes to their account


@admin.register(CreditAccount)
class CreditAccountAdmin(admin.ModelAdmin):
    list_display = ["discord_user_id", "balance", "created_at", "updated_at"]
    search_fields = [
        "discord_user_id",
        "redeemed_vouchers__code",
        "redeemed_vouchers__order__email",
    ]
    readonly_fields = ["discord_user_id", "balance", "created_at", "updated_at"]
    inlines = [LedgerEntryInline]
    actions = ["grant_credits"]

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

    def save_model(self, request, obj: CreditAccount, form, change: bool) -> None:
        if change:
            return  # nothing about an account is edited by hand
        entry = services.credits_grant(
            discord_user_id=form.cleaned_data["discord_user_id"],
            amount=form.cleaned_data["amount"],
            memo=f"{form.cleaned_data['memo']} (by {request.user.get_username()})"[: services.MAX_MEMO_LENGTH],
        )
        account = entry.account
        obj.pk, obj.balance, obj.created_at = account.pk, account.balance, account.created_at
        obj._state.adding = False
        obj._state.db = account._state.db

    def save_related(self, request, form, formsets, change) -> None:
        pass  # the account has no related rows an operator edits

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Grant credits to selected accounts")
    def grant_credits(self, request: HttpRequest, queryset: QuerySet[CreditAccount]) -> HttpResponse | None:
        form = GrantCreditsForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            granted = 0
            for discord_user_id in queryset.values_list("discord_user_id", flat=True):
                try:
                    services.credits_grant(
                        discord_user_id=discord_user_id,
                        amount=form.cleaned_data["amount"],
                        memo=f"{form.cleaned_data['memo']} (by {request.user.get_username()})"[
                            : services.MAX_MEMO_LENGTH
                        ],
                    )
                    granted += 1
                except VoucherError as exc:
                    self.message_user(request, f"{discord_user_id}: {exc.message}", messages.ERROR)
            self.message_user(
                request,
                f"Granted {form.cleaned_data['amount']} credit(s) to {granted} account(s).",
                messages.SUCCESS,
            )
            return None
        return TemplateResponse(
            request,
            "admin/vouchers/grant_credits.html",
            {
                **self.admin_site.each_context(request),
                "title": "Grant credits",
                "form": form,
                "accounts": queryset,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "account", "kind", "delta", "voucher", "generation", "memo"]
    list_filter = ["kind", "created_at"]
    search_fields = ["account__discord_user_id", "voucher__code", "memo"]
    list_select_related = ["account", "voucher", "generation"]
