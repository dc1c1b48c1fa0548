"""Display of amounts kept in the currency's smallest unit (cents), as Stripe keeps them."""

from decimal import ROUND_HALF_UP, Decimal

# Stripe's largest amount in a currency's smallest unit (its `unit_amount` limit).
MAX_AMOUNT = 99_999_999
# Currencies Stripe counts in whole units (no cents): Stripe's list of zero-decimal currencies.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
# Stripe's three-decimal currencies are left out on purpose: Stripe requires their amounts to end in 0.
# Presentment currencies Stripe supports for card payments (its documented list), lowercase as Stripe sends them.
SUPPORTED_CURRENCIES = ZERO_DECIMAL_CURRENCIES | frozenset(
    """usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bmd bnd bob brl bsd bwp byn bzd cad cdf chf cny
    cop crc cve czk dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gtq gyd hkd hnl htg huf idr ils inr isk jmd kes
    kgs khr kyd kzt lak lbp lkr lrd lsl mad mdl mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd pab
    pen pgk php pkr pln qar ron rsd rub sar sbd scr sek sgd shp sle sos srd std szl thb tjs top try ttd twd tzs uah
    uyu uzs vef wst xcd yer zar zmw""".split()
)
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
