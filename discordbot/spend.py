"""What the image service charged for an image, in integer micro-dollars (millionths of a US dollar).

OpenAI bills GPT image models by token and reports the tokens of each request in `usage` (input text tokens,
input image tokens, output image tokens, and sometimes output text tokens). `settings.IMAGE_SPEND_PRICES` holds
the price of each kind of token per model, in micro-dollars per token, which is the same number as OpenAI's
"US dollars per 1M tokens" on its price page ($5.00 / 1M tokens = 5 micro-dollars per token):

    {"gpt-image-2.5-flare": {"input_text": 5, "input_image": 8, "output_image": 30, "output_text": 10}}

A price may be an integer or a decimal string ("2.5"); a request's spend is rounded up to a whole micro-dollar,
so the figure never understates what was paid. A model missing from the table has no known spend (`None`), which
the admin shows as unknown rather than as free. Pure functions of the settings; nothing here touches the database.
"""

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

TOKEN_KINDS = ("input_text", "input_image", "output_image", "output_text")


@dataclass(frozen=True)
class ImageUsage:
    """Tokens one or more image requests used, by kind (what OpenAI's `usage` reports)."""

    input_text: int = 0
    input_image: int = 0
    output_image: int = 0
    output_text: int = 0

    def __add__(self, other: "ImageUsage") -> "ImageUsage":
        return ImageUsage(**{kind: getattr(self, kind) + getattr(other, kind) for kind in TOKEN_KINDS})

    @property
    def total(self) -> int:
        return sum(getattr(self, kind) for kind in TOKEN_KINDS)

    def as_dict(self) -> dict[str, int]:
        """For a JSON field on the generation."""
        return {kind: getattr(self, kind) for kind in TOKEN_KINDS}

    @classmethod
    def from_openai(cls, usage: Any) -> "ImageUsage":
        """From the SDK's `ImagesResponse.usage` or a stream's completed event `usage` (either may be None).

        `input_tokens_details` splits the input into text and image tokens; `output_tokens_details` (not always
        sent) splits the output. Without the details, input counts as text and output as image tokens, which is
        what a prompt-only generation is.
        """
        if usage is None:
            return cls()
        input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "output_tokens", 0) or 0)
        in_details = getattr(usage, "input_tokens_details", None)
        out_details = getattr(usage, "output_tokens_details", None)
        if in_details is not None:
            input_text, input_image = int(in_details.text_tokens or 0), int(in_details.image_tokens or 0)
        else:
            input_text, input_image = input_tokens, 0
        if out_details is not None:
            output_text, output_image = int(out_details.text_tokens or 0), int(out_details.image_tokens or 0)
        else:
            output_text, output_image = 0, output_tokens
        return cls(input_text=input_text, input_image=input_image, output_image=output_image, output_text=output_text)


def _price(model: str, kind: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ImproperlyConfigured(f"IMAGE_SPEND_PRICES[{model!r}][{kind!r}] must be an integer or a decimal string.")
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise ImproperlyConfigured(f"IMAGE_SPEND_PRICES[{model!r}][{kind!r}] is not a number: {value!r}.") from None
    if not price.is_finite() or price < 0:
        raise ImproperlyConfigured(f"IMAGE_SPEND_PRICES[{model!r}][{kind!r}] must be zero or more.")
    return price


def spend_prices(*, model: str) -> dict[str, Decimal] | None:
    """The model's price per token kind in micro-dollars, or None when the table has no row for it.

    A row must name every token kind, so a forgotten kind cannot silently count as free.
    """
    table: dict[str, dict[str, object]] = settings.IMAGE_SPEND_PRICES
    row = table.get(model)
    if row is None:
        return None
    unknown = set(row) - set(TOKEN_KINDS)
    missing = set(TOKEN_KINDS) - set(row)
    if unknown or missing:
        raise ImproperlyConfigured(
            f"IMAGE_SPEND_PRICES[{model!r}] must have exactly the keys {', '.join(TOKEN_KINDS)}"
            f" (unknown: {sorted(unknown)}, missing: {sorted(missing)})."
        )
    return {kind: _price(model, kind, row[kind]) for kind in TOKEN_KINDS}


def image_spend(*, model: str, usage: ImageUsage) -> int | None:
    """What `usage` cost at `model`'s prices, in whole micro-dollars (rounded up); None when unpriced."""
    prices = spend_prices(model=model)
    if prices is None:
        return None
    exact = sum((getattr(usage, kind) * prices[kind] for kind in TOKEN_KINDS), Decimal(0))
    return math.ceil(exact)


def check_spend_prices() -> None:
    """Raise ImproperlyConfigured for a malformed table (called at start-up, so a typo fails before any image)."""
    table = settings.IMAGE_SPEND_PRICES
    if not isinstance(table, dict) or not all(isinstance(row, dict) for row in table.values()):
        raise ImproperlyConfigured("IMAGE_SPEND_PRICES must map a model name to {token kind: price}.")
    for model in table:
        spend_prices(model=model)
