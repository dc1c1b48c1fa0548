"""`manage.py reconcileorders`: settle orders whose fate Stripe knows and we don't (see `orders_reconcile`).

Orders whose Checkout Session was never recorded (Stripe failed or timed out on create, the worker died) and
pending orders past Checkout's 24-hour expiry are checked against Stripe: fulfilled when paid, expired when no
session can still be paid. Safe to run at any time, as often as wanted, from several places at once.
Exit status 1 when some order could not be checked (Stripe unreachable): run it again later.
"""

from django.core.management.base import BaseCommand, CommandError

from storefront.services import orders_reconcile


class Command(BaseCommand):
    help = "Settle orders without a recorded Checkout Session, and pending orders past Checkout's expiry."

    def handle(self, *args, **options) -> None:
        result = orders_reconcile()
        self.stdout.write(
            f"Checked {result.checked} order(s): {result.paid} paid, {result.expired} expired, "
            f"{result.problems} could not be checked."
        )
        if result.problems:
            raise CommandError(f"{result.problems} order(s) could not be checked; run again later.", returncode=1)
