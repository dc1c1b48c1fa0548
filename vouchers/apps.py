from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class VouchersConfig(AppConfig):
    name = "vouchers"
    verbose_name = "Vouchers and credits"

    def ready(self) -> None:
        # Each installed app may contribute invariants to `auditcredits` from its own audit.py.
        autodiscover_modules("audit")
