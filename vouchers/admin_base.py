"""Admin building blocks shared by every app's admin: read-only history, permission guards, masked codes.

Every consequential operator action has its own permission (see each model's `Meta.permissions`). The admin
checks it on every path a request can take: the action list only offers what the user may run, a POSTed action
the user may not run is refused with 403 before Django would quietly ignore it, and each action and custom view
checks again itself (`require_perm`), so a path added later cannot forget it.
"""

import re
from collections.abc import Callable, Iterable

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

from vouchers.codes import mask_code, mask_codes_in, normalize_code

SEE_CODES = "vouchers.see_voucher_code"


def require_perm(request: HttpRequest, perm: str) -> None:
    """403 unless the user holds `perm` ("app_label.codename")."""
    if not request.user.is_active or not request.user.has_perm(perm):
        raise PermissionDenied


def can_see_codes(request: HttpRequest) -> bool:
    return request.user.has_perm(SEE_CODES)


def shown_code(request: HttpRequest, code: str | None) -> str:
    """A voucher code as this user may see it: in full, or masked."""
    if not code:
        return "\N{EN DASH}"
    return code if can_see_codes(request) else mask_code(code)


def shown_text(request: HttpRequest, text: str) -> str:
    """Free text (a memo, a note) with any voucher code in it masked for users who may not see codes."""
    return text if can_see_codes(request) else mask_codes_in(text)


def mask_secret(value: str) -> str:
    """An id as secret as a code (a Checkout Session id opens the page that shows its voucher): ends only."""
    if len(value) <= 16:
        return "\N{BULLET}" * len(value)
    return f"{value[:8]}\N{HORIZONTAL ELLIPSIS}{value[-4:]}"


def shown_secret(request: HttpRequest, value: str | None) -> str:
    if not value:
        return "\N{EN DASH}"
    return value if can_see_codes(request) else mask_secret(value)


def column(
    request: HttpRequest, description: str, func: Callable, *, ordering: str | None = None, css: str = ""
) -> Callable:
    """A list/readonly column computed for this request (display methods get no request; closures do).

    The same object is returned for the same request and name: the admin compares the fields it is given
    with its readonly fields by identity, across several calls.
    """
    name = css or description.replace(" ", "_")
    cache = request.__dict__.setdefault("_admin_columns", {})
    key = (name, description, ordering)
    if key not in cache:
        func.short_description = description
        if ordering:
            func.admin_order_field = ordering
        func.__name__ = name
        cache[key] = func
    return cache[key]


def moment(field: str, description: str | None = None) -> Callable:
    """A list column showing a date and time compactly (`2026-11-16 13:05`, UTC), sortable, on one line."""

    def show(obj) -> str:
        value = getattr(obj, field)
        return "\N{EN DASH}" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M")

    show.short_description = description or field.replace("_at", "").replace("_", " ")
    show.admin_order_field = field
    show.__name__ = field
    return show


def member_label(account) -> str:
    """A member as operators see them: "Name (@user) (1234...)" once the bot has seen their name, else the id."""
    if account is None:
        return "\N{EN DASH}"
    if getattr(account, "kind", "member") == "server":
        return str(account)  # a server's wallet: "Server wallet Name (guild id)"
    name = getattr(account, "discord_name", "")
    return f"{name} ({account.discord_user_id})" if name else str(account.discord_user_id)


# A search term of this many digits or more is a Discord id (snowflakes have 17-20): found by an exact, indexed
# lookup of the member alone, instead of a substring scan of every searched column.
DISCORD_ID_MIN_DIGITS = 15


def member_id(path: str, description: str = "Discord user") -> Callable:
    """A list column with a member's name and Discord id (through `path`, e.g. "account"; "" for the account
    itself), sortable by id."""

    def show(obj) -> str:
        target = obj
        for part in path.split("__") if path else []:
            target = getattr(target, part, None)
            if target is None:
                return "\N{EN DASH}"
        return member_label(target)

    show.short_description = description
    show.admin_order_field = f"{path}__discord_user_id" if path else "discord_user_id"
    show.__name__ = "member"
    return show


# A search term that is a whole email address is looked up exactly (an index), not by substring.
WHOLE_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP rows: a list of a million rows (or a filter matching most of them) costs a
    bounded `SELECT COUNT(*) FROM (SELECT id ... LIMIT COUNT_CAP + 1)` instead of a scan of the whole table.

    Past the cap, the list says "more than 10,000" (templates/admin/pagination.html reads `capped`) and pages up
    to the cap; a narrower filter or search shows the exact number again.
    """

    COUNT_CAP = 10_000

    @cached_property
    def count(self) -> int:
        found = self.object_list.order_by().values("pk")[: self.COUNT_CAP + 1].count()
        self.capped = found > self.COUNT_CAP
        return min(found, self.COUNT_CAP)

    capped = False


class GuardedAdmin(admin.ModelAdmin):
    """Refuses (403) a POSTed action the user may not run, and hides code-revealing searches from those who may
    not see codes.

    Django drops actions the user lacks `permissions=` for from the list, but a forged POST naming one simply
    re-renders the list with 200; a plain 403 says what happened and is what the tests pin.
    `code_search_fields` lists the lookups that reach voucher codes (or text holding them): a substring search
    there would reveal a code one character at a time, so users who may not see codes can only find a voucher
    by its whole code, typed any way customers type it.
    """

    code_search_fields: tuple[str, ...] = ()
    # The lookups that hold a voucher's code exactly; a whole code typed by anyone finds its rows through these.
    exact_code_lookups: tuple[str, ...] = ()
    # Other secrets found only by their exact value for those who may not see codes (a Checkout Session id).
    exact_secret_lookups: tuple[str, ...] = ()
    # The lookup of the member's Discord id ("account__discord_user_id"): a term that is a Discord id finds that
    # member's rows through it alone (an index), not through substring scans (see DISCORD_ID_MIN_DIGITS).
    member_id_lookup: str | None = None
    # Lookups holding an email address: a term that is a whole address finds its rows through these alone.
    email_lookups: tuple[str, ...] = ()

    # At a year's scale (a million ledger rows) a full count is a scan: count up to a cap, and never twice.
    paginator = CappedCountPaginator
    show_full_result_count = False

    def changelist_view(self, request: HttpRequest, extra_context=None):
        if request.method == "POST":
            requested = set(request.POST.getlist("action"))
            known = {name for _func, name, _desc in self._get_base_actions()}
            allowed = set(self.get_actions(request))
            if requested & known - allowed:
                raise PermissionDenied
        return super().changelist_view(request, extra_context)

    def related_search(self, request: HttpRequest, term: str) -> Q:
        """More substring matches for a term, as a Q of subqueries (`pk__in=...`): related tables searched one at
        a time, where a search field through a to-many join would join every row to every related row."""
        return Q()

    def get_search_fields(self, request: HttpRequest) -> Iterable[str]:
        fields = list(super().get_search_fields(request))
        if can_see_codes(request):
            return fields
        return [f for f in fields if f not in self.code_search_fields]

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        term = search_term.strip()
        if self.member_id_lookup and term.isascii() and term.isdigit() and len(term) >= DISCORD_ID_MIN_DIGITS:
            if int(term) >= 2**63:
                return queryset.none(), False
            return queryset.filter(**{self.member_id_lookup: int(term)}), False
        canonical = normalize_code(term)
        if canonical and self.exact_code_lookups:
            # A whole code is unique and indexed: found exactly, with no substring scan of every searched column.
            match = Q()
            for lookup in self.exact_code_lookups:
                match |= Q(**{lookup: canonical})
            return queryset.filter(match), False
        if self.email_lookups and WHOLE_EMAIL.match(term):
            match = Q()
            for lookup in self.email_lookups:
                match |= Q(**{lookup: term}) | Q(**{lookup: term.lower()})
            return queryset.filter(match), True
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if term and (related := self.related_search(request, term)):
            found = found | queryset.filter(related)
        match = Q()
        if term:
            for lookup in self.exact_secret_lookups:
                match |= Q(**{lookup: term})
        if match:
            found = found | queryset.filter(match)
        return found, may_have_duplicates


class ReadOnlyAdmin(GuardedAdmin):
    """History that must not change (orders, Stripe events, the ledger, generations): operators can look and
    search, never add, edit or delete."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
