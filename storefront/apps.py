from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.core.management import call_command
from django.db.models.signals import post_migrate


def _create_cache_tables(*, using: str, **kwargs) -> None:
    # A database cache (CACHE_URL=dbcache://..., production's default) needs its table; every deploy runs
    # `migrate`, so the table exists before anything serves. Idempotent, and a no-op for other caches.
    call_command("createcachetable", database=using, verbosity=0)


class StorefrontConfig(AppConfig):
    name = "storefront"
    verbose_name = "Storefront"

    def ready(self) -> None:
        from storefront import checks  # noqa: F401  (registers the deploy checks)

        post_migrate.connect(_create_cache_tables, sender=self)


class ShopAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with our site (shop name, optional TOTP, the money dashboard) as the default site."""

    default = False  # named explicitly in INSTALLED_APPS; StorefrontConfig stays this module's default
    default_site = "storefront.admin_site.ShopAdminSite"
