"""Display of amounts kept in the currency's smallest unit (cents), as Stripe keeps them."""

from decimal import ROUND_HALF_UP, Decimal

# Currencies Stripe counts in whole units (no cents), among those a pack is plausibly priced in.
ZERO_DECIMAL_CURRENCIES = frozenset({"jpy", "krw", "vnd", "clp", "isk"})
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "cad": "CA$", "aud": "A$", "jpy": "¥"}
_CENT = Decimal("0.01")
_MILL = Decimal("0.001")


def _major_units(amount: int, currency: str) -> Decimal:
    return Decimal(amount) if currency.lower() in ZERO_DECIMAL_CURRENCIES else Decimal(amount) / 100


def _with_symbol(value: str, currency: str) -> str:
    symbol = _SYMBOLS.get(currency.lower())
    return f"{symbol}{value}" if symbol else f"{value} {currency.upper()}"


def format_money(amount: int, currency: str) -> str:
    """`1999, "usd"` -> `$19.99`; `500, "jpy"` -> `¥500`."""
    places = Decimal(1) if currency.lower() in ZERO_DECIMAL_CURRENCIES else _CENT
    value = _major_units(amount, currency).quantize(places, rounding=ROUND_HALF_UP)
    return _with_symbol(f"{value:,}", currency)


def format_unit_price(amount: int, units: int, currency: str) -> str:
    """The price of one of `units`, with a third decimal only when it says something: `$0.10`, `$0.083`."""
    value = (_major_units(amount, currency) / units).quantize(_MILL, rounding=ROUND_HALF_UP)
    if value == value.quantize(_CENT):
        value = value.quantize(_CENT)
    return _with_symbol(f"{value:,}", currency)
