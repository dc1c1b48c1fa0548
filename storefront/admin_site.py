"""The operators' admin site: the shop's name in the header, an optional TOTP second factor, the money dashboard.

It replaces Django's default site (see `storefront.apps.ShopAdminConfig`), so every `@admin.register` in the
apps lands here. With `ADMIN_OTP_REQUIRED` on, a staff user must also verify a TOTP device (django-otp) at login,
and a session that has not is treated as not staff at all, on every admin URL.
"""

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.http import HttpRequest
from django.urls import path


def shop_name() -> str:
    # Read at each request: issue 12 adds the same setting; tests override it.
    return getattr(settings, "SHOP_NAME", "Image Credits")


def otp_required() -> bool:
    return bool(getattr(settings, "ADMIN_OTP_REQUIRED", False))


class ShopAdminSite(admin.AdminSite):
    index_title = "Back office"
    # The app list is one click away on the home page; at 1366 px the sidebar would take the room the lists need.
    enable_nav_sidebar = False

    @property
    def site_header(self) -> str:  # type: ignore[override]
        return f"{shop_name()} admin"

    @property
    def site_title(self) -> str:  # type: ignore[override]
        return f"{shop_name()} admin"

    @property
    def login_form(self):  # type: ignore[override]
        if otp_required():
            from django_otp.admin import OTPAdminAuthenticationForm

            return OTPAdminAuthenticationForm
        return AdminAuthenticationForm

    @property
    def login_template(self) -> str | None:  # type: ignore[override]
        # django-otp's admin login page: username, password, then the device and its code.
        return "otp/admin111/login.html" if otp_required() else None

    def has_permission(self, request: HttpRequest) -> bool:
        if not super().has_permission(request):
            return False
        # OTPMiddleware gives every request's user `is_verified()`: true only after a device verified a token
        # in this session.
        return not otp_required() or request.user.is_verified()

    def get_urls(self):
        from storefront import dashboard

        return [
            path("dashboard/", self.admin_view(dashboard.dashboard_view), name="dashboard"),
            path("dashboard/export/<str:kind>.csv", self.admin_view(dashboard.export_view), name="dashboard_export"),
            *super().get_urls(),
        ]

    def each_context(self, request: HttpRequest) -> dict:
        context = super().each_context(request)
        context["can_view_dashboard"] = request.user.has_perm("storefront.view_dashboard")
        return context
