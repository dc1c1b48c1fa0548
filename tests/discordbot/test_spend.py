"""Image spend: the tokens the service reports, priced by IMAGE_SPEND_PRICES, in whole micro-dollars."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from openai.types import ImagesResponse
from openai.types.image_gen_completed_event import Usage as StreamUsage

from discordbot.spend import ImageUsage, check_spend_prices, image_spend

ROW = {"input_text": 5, "input_image": 8, "output_image": 30, "output_text": 10}


def test_usage_from_an_images_response_splits_text_and_image_tokens():
    response = ImagesResponse.model_validate(
        {
            "created": 1,
            "usage": {
                "input_tokens": 75,
                "input_tokens_details": {"text_tokens": 10, "image_tokens": 65},
                "output_tokens": 1056,
                "output_tokens_details": {"text_tokens": 0, "image_tokens": 1056},
                "total_tokens": 1131,
            },
        }
    )
    assert ImageUsage.from_openai(response.usage) == ImageUsage(
        input_text=10, input_image=65, output_image=1056, output_text=0
    )


def test_usage_without_output_details_counts_the_output_as_image_tokens():
    usage = StreamUsage.model_validate(
        {
            "input_tokens": 12,
            "input_tokens_details": {"text_tokens": 12, "image_tokens": 0},
            "output_tokens": 272,
            "total_tokens": 284,
        }
    )
    assert ImageUsage.from_openai(usage) == ImageUsage(input_text=12, output_image=272)
    assert ImageUsage.from_openai(None) == ImageUsage()


def test_spend_is_tokens_times_prices(settings):
    settings.IMAGE_SPEND_PRICES = {"m": ROW}
    usage = ImageUsage(input_text=10, input_image=65, output_image=1056, output_text=3)
    assert image_spend(model="m", usage=usage) == 10 * 5 + 65 * 8 + 1056 * 30 + 3 * 10  # 32,280 = $0.03228
    assert image_spend(model="m", usage=usage + usage) == 2 * 32_280


def test_fractional_prices_round_up_to_a_whole_micro_dollar(settings):
    settings.IMAGE_SPEND_PRICES = {"m": ROW | {"input_text": "2.5", "output_image": "0.1"}}
    assert image_spend(model="m", usage=ImageUsage(input_text=1)) == 3  # 2.5 -> 3, never understated
    assert image_spend(model="m", usage=ImageUsage(output_image=20)) == 2


def test_an_unpriced_model_has_unknown_spend_not_zero(settings):
    settings.IMAGE_SPEND_PRICES = {"m": ROW}
    assert image_spend(model="other", usage=ImageUsage(output_image=100)) is None


@pytest.mark.parametrize(
    "row",
    [
        {k: v for k, v in ROW.items() if k != "output_text"},  # a forgotten kind would count as free
        ROW | {"cached_input": 1},
        ROW | {"input_text": -1},
        ROW | {"input_text": "five"},
        ROW | {"input_text": 1.5},  # floats are refused: use "1.5"
        ROW | {"input_text": True},
    ],
)
def test_a_malformed_price_row_fails_loudly(settings, row):
    settings.IMAGE_SPEND_PRICES = {"m": row}
    with pytest.raises(ImproperlyConfigured):
        check_spend_prices()


def test_manage_check_reports_a_malformed_table_and_deploy_warns_about_an_unpriced_model(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.IMAGE_SPEND_PRICES = {"m": ROW | {"input_text": -1}}
    with pytest.raises(SystemCheckError, match="discordbot.E001"):
        call_command("check")

    from discordbot.checks import check_image_spend_priced

    settings.IMAGE_SPEND_PRICES = {}
    settings.IMAGE_BACKEND, settings.IMAGE_MODEL = "openai", "gpt-image-2.5-flare"
    assert [w.id for w in check_image_spend_priced(None)] == ["discordbot.I001"]
    settings.IMAGE_SPEND_PRICES = {"gpt-image-2.5-flare": ROW}
    assert check_image_spend_priced(None) == []
