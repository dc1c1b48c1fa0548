"""Seed a few sensible credit packs so a fresh install has something to sell. Operators edit them in the admin."""

from django.db import migrations

# name, credits, price in cents (USD), sort order. Bigger packs cost less per image.
PACKS = [
    ("Starter", 50, 500, 10),
    ("Creator", 150, 1200, 20),
    ("Studio", 400, 2800, 30),
]


def seed_packs(apps, schema_editor) -> None:
    CreditPack = apps.get_model("storefront", "CreditPack")
    # Only into an empty table: never second-guess packs an operator has already set up.
    if CreditPack.objects.exists():
        return
    CreditPack.objects.bulk_create(
        CreditPack(name=name, credits=credits, price_cents=price, currency="usd", sort_order=order)
        for name, credits, price, order in PACKS
    )


class Migration(migrations.Migration):
    dependencies = [
        ("storefront", "0002_stripeevent_attempts"),
    ]

    # Unapplying keeps the packs: orders may point at them (PROTECT), and they are the operator's data now.
    operations = [migrations.RunPython(seed_packs, migrations.RunPython.noop)]
