"""`manage.py auditcredits`: check the credit invariants; exit 1 with a readable report when one is broken."""

from django.core.management.base import BaseCommand, CommandError

from vouchers.audit import audit_credits


class Command(BaseCommand):
    help = "Check the credit invariants (balances match the ledger, none negative, vouchers once, ...)."

    def handle(self, *args, **options) -> None:
        results = audit_credits()
        broken = 0
        for name, problems in results.items():
            if problems:
                broken += 1
                self.stdout.write(self.style.ERROR(f"FAIL  {name}"))
                for problem in problems[:50]:
                    self.stdout.write(f"      - {problem}")
                if len(problems) > 50:
                    self.stdout.write(f"      ... and {len(problems) - 50} more")
            else:
                self.stdout.write(self.style.SUCCESS(f"ok    {name}"))
        if broken:
            raise CommandError(f"{broken} of {len(results)} invariants broken.", returncode=1)
        self.stdout.write(f"All {len(results)} invariants hold.")
