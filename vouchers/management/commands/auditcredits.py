"""`manage.py auditcredits`: check the credit invariants; exit 1 with a readable report when one is broken.

    manage.py auditcredits               # every record: a few SQL scans of each table, linear in the history
    manage.py auditcredits --since 1d    # what changed in the last day (also 12h, 30m, or 2026-11-30[T12:00])

The windowed run costs what the window's activity costs, whatever the size of the history: run it often (hourly,
say) and the full pass nightly. See vouchers/audit.py for what each check looks at in a window.
"""

import re
from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from vouchers.audit import audit_credits

_SPAN = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_since(value: str) -> datetime:
    """`30d`, `12h`, `90m` back from now, or an ISO date or date and time (UTC unless it says otherwise)."""
    text = value.strip()
    if match := _SPAN.match(text):
        return timezone.now() - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--since {value!r}: give e.g. 1d, 12h, 30m or 2026-11-30T12:00.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Check the credit invariants (balances match the ledger, none negative, vouchers once, ...)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            help="check only what changed since then: 1d, 12h, 30m, or an ISO date/time (default: everything)",
        )

    def handle(self, *args, **options) -> None:
        since = parse_since(options["since"]) if options.get("since") else None
        results = audit_credits(since=since)
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
        window = f" for what changed since {since:%Y-%m-%d %H:%M} UTC" if since else ""
        self.stdout.write(f"All {len(results)} invariants hold{window}.")
