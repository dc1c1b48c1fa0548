"""`manage.py processstripeevents [--now]`: run the stored Stripe events that are due, here and now.

The web workers' processor threads do this on their own (storefront/eventqueue.py); this is the operator's
handle: `--now` first makes every unprocessed event due (skipping what is left of its retry delay), e.g. after
fixing what made one fail. Events held by a running processor are left to it. Exit status 1 when some failed.
"""

from django.core.management.base import BaseCommand, CommandError

from storefront import webhooks
from storefront.models import StripeEvent
from storefront.services import stripe_events_retry_now


class Command(BaseCommand):
    help = "Process the stored Stripe events that are due (--now: all unprocessed ones, ignoring retry delays)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--now", action="store_true", help="make every unprocessed event due first")

    def handle(self, *args, **options) -> None:
        if options["now"]:
            waiting = StripeEvent.objects.filter(processed_at__isnull=True).values_list("event_id", flat=True)
            stripe_events_retry_now(event_ids=list(waiting))
        outcomes = webhooks.process_due(limit=10_000)
        failed = sum(1 for outcome in outcomes.values() if outcome == "failed")
        processed = sum(1 for outcome in outcomes.values() if outcome == "processed")
        left = StripeEvent.objects.filter(processed_at__isnull=True).count()
        self.stdout.write(f"Processed {processed} event(s), {failed} failed; {left} unprocessed left.")
        if failed:
            raise CommandError(f"{failed} event(s) failed again; see their errors in the admin.", returncode=1)
