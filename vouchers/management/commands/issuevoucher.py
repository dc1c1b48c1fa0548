"""`manage.py issuevoucher CREDITS [--count N] [--note TEXT]`: issue vouchers, printing one code a line."""

from django.core.management.base import BaseCommand, CommandError

from vouchers.errors import VoucherError
from vouchers.services import voucher_issue

MAX_COUNT = 10_000


class Command(BaseCommand):
    help = "Issue COUNT vouchers worth CREDITS each and print their codes, one a line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("credits", type=int, help="credits each voucher is worth")
        parser.add_argument("--count", type=int, default=1, help=f"how many vouchers (1-{MAX_COUNT})")
        parser.add_argument("--note", default="", help="an operator note stored on each voucher")

    def handle(self, *args, credits: int, count: int, note: str, **options) -> None:
        if not 1 <= count <= MAX_COUNT:
            raise CommandError(f"--count must be from 1 to {MAX_COUNT}.")
        try:
            # Validate once before writing anything, so bad input issues nothing at all.
            first = voucher_issue(credits=credits, note=note)
        except VoucherError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(first.code)
        for _ in range(count - 1):
            self.stdout.write(voucher_issue(credits=credits, note=note).code)
