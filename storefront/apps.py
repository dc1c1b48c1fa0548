from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class StorefrontConfig(AppConfig):
    name = "storefront"
    verbose_name = "Storefront"

    def ready(self) -> None:
        from storefront import checks  # noqa: F401  (registers the deploy checks)


class ShopAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with our site (shop name, optional TOTP, the money dashboard) as the default site."""

    default = False  # named explicitly in INSTALLED_APPS; StorefrontConfig stays this module's default
    default_site = "storefront.admin_site.ShopAdminSite"
