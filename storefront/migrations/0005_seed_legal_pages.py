"""Seed the terms, privacy and refund pages with their default wording, for the operator to edit in the admin."""

from django.db import migrations

# The default wording as storefront/legal.py has it when this runs; later runs never overwrite an edited page.
from storefront.legal import DEFAULT_BODIES, DEFAULT_TITLES


def seed(apps, schema_editor):
    LegalPage = apps.get_model("storefront", "LegalPage")
    for kind, title in DEFAULT_TITLES.items():
        LegalPage.objects.get_or_create(kind=kind, defaults={"title": title, "body": DEFAULT_BODIES[kind]})


class Migration(migrations.Migration):
    dependencies = [("storefront", "0004_order_discord_name_legal_pages_sample_gallery")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
