"""Credits per image for every operation: one table (GENERATION_COSTS) plus a surcharge per operation."""

import pytest

from vouchers.pricing import image_cost, image_unit_cost, operation_surcharges, price_range


@pytest.fixture(autouse=True)
def _table(settings):
    settings.GENERATION_COSTS = {"1024x1024": {"low": 1, "high": 3}, "1536x1024": {"low": 2, "high": 0}}
    settings.IMAGE_OPERATION_SURCHARGES = {"generate": 0, "edit": 1, "variation": 2}
    settings.IMAGE_MAX_COUNT = 4


@pytest.mark.parametrize(
    ("operation", "size", "quality", "count", "inputs", "credits"),
    [
        ("generate", "1024x1024", "low", 1, 0, 1),
        ("generate", "1024x1024", "high", 4, 0, 12),
        ("edit", "1024x1024", "high", 2, 3, 8),  # (3 + 1) per image
        ("edit", "1536x1024", "low", 4, 16, 12),
        ("variation", "1024x1024", "low", 3, 1, 9),  # (1 + 2) per image
    ],
)
def test_image_cost_is_per_image_price_times_count(operation, size, quality, count, inputs, credits):
    assert image_cost(operation=operation, size=size, quality=quality, count=count, input_images=inputs) == credits
    unit = image_unit_cost(operation=operation, size=size, quality=quality)
    assert unit * count == credits  # so a partial failure refunds exactly `unit` per missing image


@pytest.mark.parametrize(
    "changes",
    [
        {"operation": "upscale"},
        {"size": "512x512"},
        {"quality": "medium"},
        {"size": "1536x1024", "quality": "high"},  # 0 in the table: not on offer
        {"count": 0},
        {"count": 5},  # over IMAGE_MAX_COUNT
        {"operation": "generate", "input_images": 1},
        {"operation": "variation", "input_images": 2},
        {"operation": "edit", "input_images": 0},
        {"operation": "edit", "input_images": 17},
    ],
)
def test_what_is_not_on_offer_has_no_price(changes):
    request = {"operation": "edit", "size": "1024x1024", "quality": "low", "count": 1, "input_images": 1} | changes
    with pytest.raises(ValueError):
        image_cost(**request)


def test_a_negative_surcharge_is_a_configuration_error(settings):
    settings.IMAGE_OPERATION_SURCHARGES = {"edit": -1}
    with pytest.raises(ValueError, match="IMAGE_OPERATION_SURCHARGES"):
        image_unit_cost(operation="edit", size="1024x1024", quality="low")


def test_the_shop_and_help_read_the_same_table():
    assert operation_surcharges() == {"generate": 0, "edit": 1, "variation": 2}
    assert price_range() == (1, 3)
