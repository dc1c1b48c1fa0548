"""Voucher codes: 80 random bits from `secrets`, written in Crockford base32 as four groups of four.

Input is forgiving (case, spaces, dashes, and Crockford's look-alikes O->0, I/L->1) but anything that is not
exactly 16 code characters is refused before it reaches the database.
"""

import re
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
CODE_BITS = 80
CODE_CHARS = CODE_BITS // 5  # 16
GROUP = 4
FORMATTED_LENGTH = CODE_CHARS + CODE_CHARS // GROUP - 1  # 19, e.g. K7QH-2M9D-XR4T-8BWE
MAX_INPUT_LENGTH = 64  # longer input is refused without further work

_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_VALID = frozenset(ALPHABET)


def generate_code() -> str:
    """A new random code in its canonical, dashed form."""
    value = secrets.randbits(CODE_BITS)
    chars = [ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(CODE_CHARS))]
    return _group("".join(chars))


def normalize_code(raw: str) -> str | None:
    """The canonical form of what a person typed, or None when it cannot be a voucher code."""
    if not isinstance(raw, str) or len(raw) > MAX_INPUT_LENGTH:
        return None
    compact = "".join(raw.split()).replace("-", "").upper().translate(_LOOKALIKES)
    if len(compact) != CODE_CHARS or not set(compact) <= _VALID:
        return None
    return _group(compact)


def _group(compact: str) -> str:
    return "-".join(compact[i : i + GROUP] for i in range(0, len(compact), GROUP))


# What an operator without the "see codes" permission sees: the last group only, enough to tell vouchers apart
# and to match what a customer reads out, 20 of the 80 bits, far too few to redeem.
MASK_GROUP = "\N{BULLET}" * GROUP
_CODE_IN_TEXT = re.compile(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-([0-9A-Z]{4})\b")


def mask_code(code: str) -> str:
    """`K7QH-2M9D-XR4T-8BWE` -> `••••-••••-••••-8BWE`."""
    if not code:
        return ""
    return "-".join([MASK_GROUP] * (CODE_CHARS // GROUP - 1) + [code[-GROUP:]])


def mask_codes_in(text: str) -> str:
    """Every voucher code inside free text (a ledger memo, a note) masked as `mask_code` does."""
    return _CODE_IN_TEXT.sub(lambda m: mask_code(m.group(0)), text or "")
