"""CSV cells for operators' spreadsheets (the dashboard's exports, a dispute's evidence)."""

from datetime import UTC, datetime


def csv_cell(value: object) -> object:
    """A spreadsheet must not run what members typed: text starting with a formula character is quoted."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return "" if value is None else value
