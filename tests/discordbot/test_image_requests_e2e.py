"""Issue 11 end to end: several images at once, /edit from attached pictures, private results. The real bot
against the fake Discord, pictures from a fake CDN, images from the fake OpenAI through the real `AsyncOpenAI`
client. Every credit taken ends as a delivered image or a refund; a partial failure refunds exactly the missing
images; a picture that cannot be used costs nothing."""

import pytest

from discordbot.models import Generation
from tests.discordbot.fake_cdn import FakeCDN
from tests.discordbot.fake_discord import EPHEMERAL, Attachment
from tests.discordbot.image_inputs import markup_bytes, picture_bytes
from vouchers.audit import audit_credits
from vouchers.models import LedgerEntry
from vouchers.selectors import account_balance

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cdn(harness, settings):
    """A fake Discord CDN on 127.0.0.1, accepted as Discord's attachment host for these tests."""
    fake = FakeCDN(slow_seconds=20)
    harness.run(fake.start())
    settings.DISCORD_CDN_HOSTS = ["127.0.0.1"]
    settings.ATTACHMENT_READ_TIMEOUT_SECONDS = 3
    yield fake
    harness.run(fake.stop())


def attach(cdn: FakeCDN, path: str, data: bytes, content_type: str = "image/png") -> Attachment:
    return Attachment(
        url=cdn.add(path, data, content_type),
        filename=path.rsplit("/", 1)[-1],
        size=len(data),
        content_type=content_type,
    )


def ledger(user: int) -> list[tuple[str, int]]:
    return list(
        LedgerEntry.objects.filter(account__discord_user_id=user, generation__isnull=False)
        .order_by("pk")
        .values_list("kind", "delta")
    )


# --- count -----------------------------------------------------------------------------------------------------


def test_count_four_posts_four_images_in_one_message_for_four_times_the_price(bot, member, fund, assert_audit_clean):
    user = member()
    fund(user, 5)

    answer = bot.answer(bot.command("generate", user=user, prompt="four foxes", count=4))

    assert answer.route == "edit_message" and answer.message_id == "@original"
    assert len(answer.uploads) == 4 and all(upload.is_png for upload in answer.uploads)
    generation = Generation.objects.get()
    assert [u.filename for u in answer.uploads] == [
        f"image-{generation.pk}.png",
        *(f"image-{generation.pk}-{i}.png" for i in (2, 3, 4)),
    ]
    assert "4 credits" in answer.content and "could not be made" not in answer.content
    assert answer.buttons[0]["label"] == "Regenerate (4 credits)"
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    generation.refresh_from_db()
    assert (generation.count, generation.delivered_count, generation.cost) == (4, 4, 4)
    [request] = bot.openai.requests
    assert request.body["n"] == 4
    assert account_balance(discord_user_id=user) == 1
    assert ledger(user) == [("generate", -4)]
    assert_audit_clean()


def test_count_four_with_one_image_missing_charges_three_and_refunds_exactly_one(
    bot, member, fund, settings, assert_audit_clean
):
    user = member()
    fund(user, 12)
    bot.openai.mode = "fewer"  # the service answers n=4 with three images

    answer = bot.answer(bot.command("generate", user=user, prompt="a quartet", count=4, quality="high"))

    assert len(answer.uploads) == 3
    unit = settings.GENERATION_COSTS["1024x1024"]["high"]
    assert f"{3 * unit} credits" in answer.content
    assert f"1 image of 4 could not be made; {unit} credit" in answer.content
    generation = bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).first())
    assert (generation.count, generation.delivered_count) == (4, 3)
    assert ledger(user) == [("generate", -4 * unit), ("refund", unit)]
    assert account_balance(discord_user_id=user) == 12 - 3 * unit
    assert_audit_clean()

    # The audit is what would catch a wrong settlement: a record saying all four arrived, yet one refunded...
    Generation.objects.filter(pk=generation.pk).update(delivered_count=4)
    broken = {name: problems for name, problems in audit_credits().items() if problems}
    assert any(f"generation {generation.pk}" in " ".join(problems) for problems in broken.values()), broken
    # ...or a refund of two images when one was missing.
    Generation.objects.filter(pk=generation.pk).update(delivered_count=2)
    assert any(problems for problems in audit_credits().values())


def test_count_above_four_is_refused_by_discord_types_and_over_the_balance_refused_before_anything(
    bot, member, fund, assert_audit_clean
):
    user = member()
    fund(user, 3)

    answer = bot.answer(bot.command("generate", user=user, prompt="too many for my balance", count=4))

    assert answer.route == "callback" and answer.ephemeral
    assert "These 4 images cost 4 credits and your balance is 3 credits" in answer.content
    assert not bot.openai.requests and not Generation.objects.exists()
    assert account_balance(discord_user_id=user) == 3
    assert_audit_clean()


def test_count_four_failing_as_a_whole_refunds_all_four(bot, member, fund, assert_audit_clean):
    user = member()
    fund(user, 4)
    bot.openai.mode = "moderation"

    sent = bot.command("generate", user=user, prompt="blocked four", count=4)
    answer = bot.answer(sent)

    assert not answer.uploads and "4 credits were refunded" in answer.content
    bot.wait_for(lambda: not bot.discord.visible(sent.token))
    assert ledger(user) == [("generate", -4), ("refund", 4)]
    assert account_balance(discord_user_id=user) == 4
    assert_audit_clean()


# --- /edit -----------------------------------------------------------------------------------------------------


def test_edit_one_picture_sends_it_to_the_service_and_posts_the_result(
    bot, cdn, member, fund, settings, assert_audit_clean
):
    user = member()
    fund(user, 5)
    photo = picture_bytes(size=(64, 48))

    answer = bot.answer(bot.command("edit", user=user, prompt="make it blue", image=attach(cdn, "a/photo.png", photo)))

    assert len(answer.uploads) == 1 and answer.uploads[0].is_png
    [request] = bot.openai.requests
    assert request.endpoint == "edits" and request.body["prompt"] == "make it blue"
    assert [image.data for image in request.images] == [photo]
    assert request.markup is None
    unit = settings.GENERATION_COSTS["1024x1024"]["medium"] + settings.IMAGE_OPERATION_SURCHARGES["edit"]
    generation = bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).first())
    assert (generation.operation, generation.cost) == ("edit", unit)
    assert account_balance(discord_user_id=user) == 5 - unit
    # An edit's pictures are not kept, so it offers no Regenerate; Vary (from the message) and Delete stay.
    assert [button["custom_id"] for button in answer.buttons] == [f"vary:{generation.pk}", f"delete:{generation.pk}"]
    assert_audit_clean()


def test_edit_several_pictures_and_a_markup_reach_the_service_in_order(
    harness, cdn, member, fund, settings, assert_audit_clean
):
    assert settings.IMAGE_MODEL == "gpt-image-2.5-flare"  # the default, and a model that takes a markup
    harness.start_bot()
    user = member()
    fund(user, 10)
    first, second, third = (picture_bytes(color=(i * 60, 20, 20)) for i in (1, 2, 3))
    overlay = markup_bytes()

    sent = harness.command(
        "edit",
        user=user,
        prompt="put them together",
        image=attach(cdn, "p/one.png", first),
        image2=attach(cdn, "p/two.jpg", picture_bytes(fmt="JPEG"), "image/jpeg"),
        image3=attach(cdn, "p/three.png", third),
        markup=attach(cdn, "p/markup.png", overlay),
    )
    answer = harness.answer(sent)

    assert len(answer.uploads) == 1
    [request] = harness.openai.requests
    assert request.body["model"] == "gpt-image-2.5-flare"
    assert [image.filename for image in request.images] == ["one.png", "two.jpg", "three.png"]
    assert request.images[0].data == first and request.images[2].data == third
    assert request.markup is not None and request.markup.data == overlay
    harness.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    assert_audit_clean()


@pytest.mark.parametrize(
    "path, data, content_type, words",
    [
        ("bad/notes.txt", b"just some text", "text/plain", "only PNG, JPEG or WebP"),
        ("bad/broken.png", picture_bytes()[:40], "image/png", "could not be read"),
        ("missing/gone.png", None, "image/png", "could not be downloaded"),
    ],
)
def test_a_picture_that_cannot_be_used_is_refused_privately_and_costs_nothing(
    bot, cdn, member, fund, path, data, content_type, words, assert_audit_clean
):
    user = member()
    fund(user, 5)
    if data is None:
        attachment = Attachment(url=cdn.url(path), filename="gone.png", size=100, content_type=content_type)
    else:
        attachment = attach(cdn, path, data, content_type)

    sent = bot.command("edit", user=user, prompt="fix it", image=attachment)
    answer = bot.answer(sent)

    assert words in answer.content and "Nothing was charged" in answer.content
    bot.wait_for(lambda: not bot.discord.visible(sent.token))  # the public deferral was withdrawn
    [private] = [m for m in bot.discord.private(sent.token) if m["content"] == answer.content]
    assert private["flags"] & EPHEMERAL and not bot.discord.channel_saw(answer.content)
    assert not bot.openai.requests and not Generation.objects.exists()
    assert account_balance(discord_user_id=user) == 5
    assert_audit_clean()


def test_a_markup_on_a_model_without_markup_is_refused_before_anything_is_charged(
    harness, cdn, member, fund, settings, assert_audit_clean
):
    settings.IMAGE_MODEL = "gpt-image-2"  # takes edits, not a markup
    bot = harness
    bot.start_bot()
    user = member()
    fund(user, 5)

    sent = bot.command(
        "edit",
        user=user,
        prompt="mark it",
        image=attach(cdn, "m/photo.png", picture_bytes()),
        markup=attach(cdn, "m/markup.png", markup_bytes()),
    )
    answer = bot.answer(sent)

    assert "does not take a markup" in answer.content and "Nothing was charged" in answer.content
    assert not bot.openai.requests and not Generation.objects.exists()
    assert account_balance(discord_user_id=user) == 5
    assert_audit_clean()


# --- private ---------------------------------------------------------------------------------------------------


def test_private_generate_is_sent_ephemerally_and_the_channel_sees_nothing(bot, member, fund, assert_audit_clean):
    user = member()
    fund(user, 3)

    sent = bot.command("generate", user=user, prompt="a secret garden", private=True, count=2)
    deferral = bot.deferral(sent)
    assert deferral.json["type"] == 5 and deferral.ephemeral
    answer = bot.answer(sent)

    assert len(answer.uploads) == 2
    assert not bot.discord.visible(sent.token)
    assert not any(token == sent.token for _, token, _ in bot.discord.public_log)
    assert not bot.discord.channel_saw("a secret garden")
    [result] = bot.discord.private(sent.token)
    assert result["flags"] & EPHEMERAL and len(result["attachments"]) == 2
    generation = bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).first())
    assert generation.private
    # An ephemeral message is the member's alone: no Delete; Regenerate, Edit and Vary stay (and stay private).
    assert [b["custom_id"] for b in answer.buttons] == [
        f"regenerate:{generation.pk}",
        f"editprompt:{generation.pk}",
        f"vary:{generation.pk}",
    ]
    assert account_balance(discord_user_id=user) == 1
    assert_audit_clean()


def test_private_edit_with_a_bad_picture_is_refused_privately(bot, cdn, member, fund, assert_audit_clean):
    user = member()
    fund(user, 3)

    sent = bot.command(
        "edit", user=user, prompt="secret", private=True, image=attach(cdn, "x/n.txt", b"text", "text/plain")
    )
    answer = bot.answer(sent)

    assert "Nothing was charged" in answer.content and answer.ephemeral
    assert not any(token == sent.token for _, token, _ in bot.discord.public_log)
    assert not Generation.objects.exists() and account_balance(discord_user_id=user) == 3
    assert_audit_clean()


# --- Vary ------------------------------------------------------------------------------------------------------


def test_vary_edits_the_result_from_its_message_with_the_same_prompt_and_is_for_the_requester_only(
    bot, member, fund, settings, assert_audit_clean
):
    settings.DISCORD_CDN_HOSTS = ["127.0.0.1"]  # the fake Discord serves its messages' attachments
    user, other = member(), member()
    fund(user, 10)
    fund(other, 10)
    first = bot.command("generate", user=user, prompt="a lighthouse at dusk", size="1536x1024")
    answer = bot.answer(first)
    source = bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).first())
    vary = next(b for b in answer.buttons if b["custom_id"] == f"vary:{source.pk}")
    unit = settings.GENERATION_COSTS["1536x1024"]["medium"] + settings.IMAGE_OPERATION_SURCHARGES["variation"]
    assert vary["label"] == f"Vary ({unit} credits)"
    message_id = bot.discord.originals[first.token]

    refused = bot.click(vary["custom_id"], user=other, message_id=message_id)
    refusal = bot.answer(refused)
    assert refusal.ephemeral and "Only the member who asked for this image can vary it" in refusal.content
    assert account_balance(discord_user_id=other) == 10 and len(bot.openai.requests) == 1

    click = bot.click(vary["custom_id"], user=user, message_id=message_id)
    result = bot.answer(click)

    assert len(result.uploads) == 1 and result.uploads[0].is_png, result.content
    variation = bot.wait_for(
        lambda: Generation.objects.filter(operation="variation", status=Generation.Status.SUCCEEDED).first()
    )
    request = bot.openai.requests[-1]
    assert request.endpoint == "edits" and request.body["prompt"] == "a lighthouse at dusk"
    assert request.body["size"] == "1536x1024"
    assert [image.data for image in request.images] == [answer.uploads[0].data]  # the posted image itself
    assert any(path.endswith(f"/image-{source.pk}.png") for path in bot.discord.cdn_requests)
    assert variation.cost == unit
    assert account_balance(discord_user_id=user) == 10 - 2 - unit
    assert_audit_clean()


# --- live previews ---------------------------------------------------------------------------------------------


def preview_edits(bot, sent) -> list:
    return [
        call
        for call in bot.calls(sent)
        if call.route == "edit_message" and call.uploads and call.uploads[0].filename.startswith("preview-")
    ]


def test_previews_are_edited_into_the_message_then_replaced_by_the_image(
    bot, member, fund, settings, assert_audit_clean
):
    settings.IMAGE_PREVIEW_PARTIALS = 2
    settings.IMAGE_PREVIEW_INTERVAL_SECONDS = 0.2
    bot.openai.delay = 1.5  # the fake spreads it over the stream: a partial image every 0.5 s
    user = member()
    fund(user, 3)

    sent = bot.command("generate", user=user, prompt="a slow sunrise")
    answer = bot.answer(sent, timeout=20)

    generation = bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).first())
    previews = preview_edits(bot, sent)
    assert [call.content for call in previews] == [
        "\N{ARTIST PALETTE} Making your image... (preview 1)",
        "\N{ARTIST PALETTE} Making your image... (preview 2)",
    ]
    assert all(call.uploads[0].is_png and call.message_id == "@original" for call in previews)
    assert previews[-1].at <= answer.at
    assert [upload.filename for upload in answer.uploads] == [f"image-{generation.pk}.png"]
    final = bot.discord.messages[bot.discord.originals[sent.token]]
    assert [a["filename"] for a in final["attachments"]] == [f"image-{generation.pk}.png"]  # previews replaced
    [request] = bot.openai.requests
    assert request.body["stream"] and request.body["partial_images"] == 2
    assert account_balance(discord_user_id=user) == 2
    assert_audit_clean()


def test_previews_arriving_faster_than_the_edit_interval_are_dropped(bot, member, fund, settings, assert_audit_clean):
    settings.IMAGE_PREVIEW_PARTIALS = 3
    settings.IMAGE_PREVIEW_INTERVAL_SECONDS = 30  # far longer than the whole request
    bot.openai.delay = 0.8
    user = member()
    fund(user, 3)

    sent = bot.command("generate", user=user, prompt="a quick sketch")
    answer = bot.answer(sent, timeout=20)

    assert len(preview_edits(bot, sent)) == 1  # the first preview only: one edit per interval
    assert len(answer.uploads) == 1 and answer.uploads[0].filename.startswith("image-")
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    assert_audit_clean()


# --- /settings -------------------------------------------------------------------------------------------------


def test_settings_are_stored_privately_and_fill_in_what_a_request_leaves_out(bot, member, fund, assert_audit_clean):
    user = member()
    fund(user, 20)

    saved = bot.answer(bot.command("settings", user=user, quality="high", count=2, private=True))
    assert saved.route == "callback" and saved.ephemeral
    assert "Saved" in saved.content and "quality: High" in saved.content and "count: 2" in saved.content
    assert "private" in saved.content
    shown = bot.answer(bot.command("settings", user=user))
    assert shown.ephemeral and "count: 2" in shown.content

    # Omitted options take the stored defaults: 2 high-quality images, sent privately (3 credits each).
    sent = bot.command("generate", user=user, prompt="my defaults")
    answer = bot.answer(sent)
    assert len(answer.uploads) == 2 and not bot.discord.visible(sent.token)
    assert bot.openai.requests[-1].body["quality"] == "high" and bot.openai.requests[-1].body["n"] == 2
    assert account_balance(discord_user_id=user) == 20 - 6

    # An option given in the command wins over the stored default.
    sent = bot.command("generate", user=user, prompt="just one, in public", count=1, private=False, quality="low")
    answer = bot.answer(sent)
    assert len(answer.uploads) == 1 and bot.discord.visible(sent.token)
    assert account_balance(discord_user_id=user) == 20 - 6 - 1

    # Another member's requests are untouched by these settings.
    other = member()
    fund(other, 1)
    assert len(bot.answer(bot.command("generate", user=other, prompt="plain")).uploads) == 1
    assert bot.openai.requests[-1].body["quality"] == "medium" and bot.openai.requests[-1].body["n"] == 1
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).count() == 3)
    assert_audit_clean()


# --- the Edit button's modal -----------------------------------------------------------------------------------


def test_edit_button_opens_a_prefilled_prompt_form_and_reruns_with_the_new_prompt(
    bot, member, fund, assert_audit_clean
):
    user, other = member(), member()
    fund(user, 5)
    fund(other, 5)
    first = bot.command("generate", user=user, prompt="a red boat", quality="low", count=2)
    answer = bot.answer(first)
    source = bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).first())
    edit = next(b for b in answer.buttons if b["custom_id"] == f"editprompt:{source.pk}")
    assert edit["label"] == "Edit (2 credits)"
    message_id = bot.discord.originals[first.token]

    refused = bot.click(edit["custom_id"], user=other, message_id=message_id)
    refusal = bot.answer(refused)
    assert refusal.ephemeral and "Only the member who asked for this image can change it" in refusal.content
    assert refused.token not in bot.discord.modals

    click = bot.click(edit["custom_id"], user=user, message_id=message_id)
    modal = bot.wait_for(lambda: bot.discord.modals.get(click.token))
    assert modal["title"] == "Change the prompt"
    [text] = [item for row in modal["components"] for item in (row.get("components") or [row.get("component")])]
    assert text["custom_id"] == "prompt" and text["value"] == "a red boat"  # prefilled with the old prompt
    assert len(bot.openai.requests) == 1  # opening the form costs nothing

    submitted = bot.run(bot.discord.submit_modal(user_id=user, opened_by=click.token, values={"prompt": "a blue boat"}))
    result = bot.answer(submitted)

    assert len(result.uploads) == 2
    request = bot.openai.requests[-1]
    assert request.body["prompt"] == "a blue boat" and request.body["quality"] == "low" and request.body["n"] == 2
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).count() == 2)
    assert list(Generation.objects.order_by("pk").values_list("prompt", flat=True)) == ["a red boat", "a blue boat"]
    assert account_balance(discord_user_id=user) == 5 - 2 - 2
    assert account_balance(discord_user_id=other) == 5
    assert_audit_clean()


def test_an_edit_acknowledged_too_late_is_dropped_quietly_and_costs_nothing(bot, member, fund, cdn, caplog):
    # An overloaded process answers after Discord's 3 s: the interaction is gone (10062). Nothing was reserved
    # yet, so nothing is charged, nothing is downloaded, and the log has one line, not a traceback.
    user = member()
    fund(user, 5)
    bot.discord.fail(lambda call: call.route == "callback", status=404, code=10062, message="Unknown interaction")
    sent = bot.command("edit", user=user, prompt="too late", image=attach(cdn, "late.png", picture_bytes()))

    bot.wait_for(lambda: [c for c in bot.calls(sent) if c.route == "callback" and c.status == 404])
    bot.wait_for(lambda: any("in time" in r.getMessage() for r in caplog.records))
    assert not Generation.objects.exists() and account_balance(discord_user_id=user) == 5
    assert [c.route for c in bot.calls(sent)] == ["callback"]  # no error message sent to a dead interaction
    assert not cdn.requests
    assert not [r for r in caplog.records if r.exc_info]
