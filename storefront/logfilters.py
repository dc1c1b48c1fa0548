"""Logging filters that keep secrets-by-URL (Checkout Session ids, `/buy` tokens) out of the logs."""

import logging
import re

# A request line or URL's query string: from "?" up to the next space or quote.
_QUERY = re.compile(r"\?[^\s\"']*")


class StripQueryStrings(logging.Filter):
    """Drop query strings from request lines (`django.server`'s "GET /checkout/success/?session_id=..." and the like).

    Applied on the console handler, so it covers every logger; only string arguments that look like a request line
    or URL (they contain "/" before the "?") are rewritten.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_strip(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "/" in record.msg and "?" in record.msg:
            record.msg = _strip(record.msg)
        return True


def _strip(text: str) -> str:
    return _QUERY.sub("", text) if "/" in text and "?" in text else text
