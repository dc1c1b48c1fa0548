"""/generate and Regenerate, end to end: the real bot against the fake Discord, images from the fake OpenAI
through the real `AsyncOpenAI` client. Every credit taken ends as a delivered PNG or a refund."""

import asyncio
import hashlib
import re
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from discordbot.images import ImageBatch, ImageJob, ImageSlot
from discordbot.models import Generation
from discordbot.services import generation_reserve
from discordbot.spend import ImageUsage
from tests.discordbot.fake_discord import EPHEMERAL, Call, Sent
from tests.discordbot.fake_openai import tiny_png
from tests.discordbot.harness import BotHarness
from vouchers.models import LedgerEntry
from vouchers.selectors import account_balance
from vouchers.services import credits_grant

pytestmark = pytest.mark.django_db(transaction=True)


def assert_deferred_publicly(bot: BotHarness, sent: Sent) -> Call:
    deferral = bot.deferral(sent)
    assert deferral.at - sent.at < 3.0, "Discord drops interactions not answered within 3 seconds"
    assert deferral.json["type"] == 5 and not deferral.ephemeral, deferral.json
    return deferral


def assert_image(answer: Call) -> None:
    assert answer.route == "edit_message" and answer.message_id == "@original", answer
    [upload] = answer.uploads
    assert upload.is_png and upload.filename.endswith(".png")
    assert answer.json["attachments"] == [{"id": 0, "filename": upload.filename}]


def assert_private_refusal(bot: BotHarness, sent: Sent, answer: Call, *, refused_by_test: int = 0) -> None:
    """A refusal or failure reaches only the member, as Discord documents it: the channel is left with nothing,
    and never saw the private text."""
    bot.wait_for(lambda: not bot.discord.visible(sent.token))  # the withdrawn public message, if any, is gone
    [private] = [m for m in bot.discord.private(sent.token) if m["content"] == answer.content]
    assert private["flags"] & EPHEMERAL
    assert not bot.discord.channel_saw(answer.content)
    failed = [(call.route, call.status) for call in bot.calls(sent) if call.status >= 400]
    assert len(failed) == refused_by_test, failed  # the bot itself never sent what Discord refuses


def assert_refused_before_any_deferral(bot: BotHarness, sent: Sent, answer: Call) -> None:
    """Refused at once: the initial response itself is the private answer; nothing was public, ever."""
    assert answer.route == "callback" and answer.json["type"] == 4 and answer.ephemeral, answer.json
    assert answer.at - sent.at < 3.0
    assert not any(token == sent.token for _, token, _ in bot.discord.public_log)
    assert_private_refusal(bot, sent, answer)


def test_generate_posts_a_png_with_prompt_cost_and_buttons_but_not_the_balance(
    bot, member, fund, settings, assert_audit_clean
):
    user = member()
    fund(user, 3)

    sent = bot.command("generate", user=user, prompt="a red fox in the snow")
    assert_deferred_publicly(bot, sent)
    answer = bot.answer(sent)

    assert_image(answer)
    assert "**Prompt:** a red fox in the snow" in answer.content
    assert "1 credit" in answer.content and "left" not in answer.content and "2 credits" not in answer.content
    regenerate, edit, vary, delete = answer.buttons
    generation = Generation.objects.get()
    assert edit["custom_id"] == f"editprompt:{generation.pk}" and edit["label"] == "Edit (1 credit)"
    assert vary["custom_id"] == f"vary:{generation.pk}" and vary["label"] == "Vary (2 credits)"
    assert regenerate["custom_id"] == f"regenerate:{generation.pk}" and regenerate["label"] == "Regenerate"
    assert delete["custom_id"] == f"delete:{generation.pk}"
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    generation.refresh_from_db()
    assert generation.message_id == int(bot.discord.originals[sent.token])
    assert generation.interaction_id == sent.id and generation.channel_id == bot.discord.CHANNEL_ID
    assert (generation.cost, generation.size, generation.quality) == (1, "1024x1024", "medium")
    assert account_balance(discord_user_id=user) == 2
    [request] = bot.openai.requests
    assert request.body["model"] == settings.IMAGE_MODEL == generation.model
    assert request.body["prompt"] == "a red fox in the snow"
    assert (request.body["size"], request.body["quality"], request.body["n"]) == ("1024x1024", "medium", 1)
    assert request.user == hashlib.sha256(f"discord:{user}".encode()).hexdigest()
    assert str(user) not in request.user
    assert_audit_clean()


def test_size_and_quality_choose_the_price(bot, member, fund, assert_audit_clean):
    user = member()
    fund(user, 5)

    answer = bot.answer(bot.command("generate", user=user, prompt="a castle", size="1536x1024", quality="high"))

    assert_image(answer)
    assert "1536\N{MULTIPLICATION SIGN}1024 \N{MIDDLE DOT} high \N{MIDDLE DOT} 4 credits" in answer.content
    assert account_balance(discord_user_id=user) == 1
    assert (bot.openai.requests[0].body["size"], bot.openai.requests[0].body["quality"]) == ("1536x1024", "high")
    assert answer.buttons[0]["label"] == "Regenerate (4 credits)"
    assert_audit_clean()


def test_a_member_without_enough_credits_is_refused_at_once_and_privately(bot, member, fund, assert_audit_clean):
    broke, short = member(), member()
    fund(short, 2)

    for user, options, words in [
        (broke, {}, "costs 1 credit and your balance is 0 credits"),
        (short, {"size": "1024x1536", "quality": "high"}, "costs 4 credits and your balance is 2 credits"),
    ]:
        sent = bot.command("generate", user=user, prompt="a boat", **options)
        answer = bot.answer(sent)
        assert_refused_before_any_deferral(bot, sent, answer)
        assert words in answer.content and "/buy" in answer.content
        [buy] = answer.buttons
        assert buy["style"] == 5 and buy["label"] == "Buy credits" and "?for=" in buy["url"]

    assert not bot.openai.requests
    assert not Generation.objects.exists()
    assert account_balance(discord_user_id=short) == 2
    assert_audit_clean()


def test_twenty_concurrent_generates_with_five_credits_make_five_images_and_fifteen_refusals(
    bot, member, fund, assert_audit_clean
):
    bot.bot.pipeline.max_waiting_per_member = 20  # this test is about the balance, not the line's fairness
    user = member()
    fund(user, 5)
    bot.openai.delay = 0.02

    sents = [bot.command("generate", user=user, prompt=f"lighthouse number {i}") for i in range(20)]
    answers = bot.answers(sents, timeout=30)

    images = [answer for answer in answers if answer.uploads]
    refusals = [answer for answer in answers if not answer.uploads]
    assert len(images) == 5 and len(refusals) == 15
    for sent, answer in zip(sents, answers, strict=True):
        if answer.uploads:
            assert_deferred_publicly(bot, sent)
            assert_image(answer)
        else:
            assert_refused_before_any_deferral(bot, sent, answer)
            assert "your balance is 0 credits" in answer.content
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).count() == 5)
    assert Generation.objects.count() == 5
    assert account_balance(discord_user_id=user) == 0
    assert len(bot.openai.requests) == 5
    assert_audit_clean()


@pytest.mark.parametrize(
    ("mode", "words", "attempts"),
    [
        ("moderation", "safety system blocked this prompt", 1),
        ("rate_limit", "too busy right now", 3),  # the first try and the client's two retries
        ("error", "had a problem making this image", 1),
        ("slow", "took too long to answer", None),
    ],
)
def test_backend_failures_refund_the_credit_and_say_why(
    harness, member, fund, settings, mode, words, attempts, assert_audit_clean
):
    settings.GENERATION_TIMEOUT_SECONDS = 0.5
    harness.openai.mode, harness.openai.slow_seconds = mode, 5
    bot = harness
    bot.start_bot()
    user = member()
    fund(user, 2)

    sent = bot.command("generate", user=user, prompt="something")
    assert_deferred_publicly(bot, sent)
    answer = bot.answer(sent)

    assert_private_refusal(bot, sent, answer)
    assert words in answer.content and "Your 1 credit was refunded." in answer.content
    generation = Generation.objects.get()
    assert generation.status == Generation.Status.REFUNDED and generation.finished_at
    assert account_balance(discord_user_id=user) == 2
    assert LedgerEntry.objects.filter(generation=generation, kind=LedgerEntry.Kind.REFUND).count() == 1
    if attempts is not None:
        assert len(bot.openai.requests) == attempts
    assert_audit_clean()


def test_discord_refusing_the_image_refunds_the_credit(bot, member, fund, assert_audit_clean):
    user = member()
    fund(user, 1)
    bot.discord.fail(
        lambda call: call.route == "edit_message" and bool(call.uploads),
        status=413,
        code=40005,
        message="Request entity too large",
    )

    sent = bot.command("generate", user=user, prompt="a huge image")
    answer = bot.answer(sent)

    assert_private_refusal(bot, sent, answer, refused_by_test=1)
    assert "Discord did not accept the image" in answer.content and "refunded" in answer.content
    assert Generation.objects.get().status == Generation.Status.REFUNDED
    assert account_balance(discord_user_id=user) == 1
    assert_audit_clean()


def test_regenerate_spends_another_credit_and_posts_a_new_image(bot, member, fund, assert_audit_clean):
    user = member()
    fund(user, 3)
    first = bot.command("generate", user=user, prompt="a green owl", quality="low")
    button = bot.answer(first).buttons[0]
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())

    click = bot.click(button["custom_id"], user=user, message_id=bot.discord.originals[first.token])
    assert_deferred_publicly(bot, click)
    answer = bot.answer(click)

    assert_image(answer)
    assert "**Prompt:** a green owl" in answer.content and "left" not in answer.content
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).count() == 2)
    original, again = Generation.objects.order_by("pk")
    assert (again.prompt, again.size, again.quality) == (original.prompt, original.size, original.quality)
    assert answer.buttons[0]["custom_id"] == f"regenerate:{again.pk}"
    assert account_balance(discord_user_id=user) == 1
    assert_audit_clean()


def test_regenerate_by_another_member_is_refused_and_charges_nobody(bot, member, fund, assert_audit_clean):
    owner, other = member(), member()
    fund(owner, 1)
    fund(other, 5)
    first = bot.command("generate", user=owner, prompt="my cat")
    button = bot.answer(first).buttons[0]

    click = bot.click(button["custom_id"], user=other, message_id=bot.discord.originals[first.token])
    answer = bot.answer(click)

    assert_refused_before_any_deferral(bot, click, answer)
    assert "Only the member who asked for this image can regenerate it" in answer.content
    assert account_balance(discord_user_id=other) == 5
    assert Generation.objects.count() == 1
    assert_audit_clean()


def test_regenerate_still_works_after_the_bot_restarts(harness, member, fund, assert_audit_clean):
    user = member()
    fund(user, 2)
    harness.start_bot()
    first = harness.command("generate", user=user, prompt="a lantern")
    button = harness.answer(first).buttons[0]
    harness.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    harness.stop_bot()

    harness.start_bot()
    click = harness.click(button["custom_id"], user=user, message_id=harness.discord.originals[first.token])

    assert_image(harness.answer(click))
    assert account_balance(discord_user_id=user) == 0
    assert_audit_clean()


def test_a_members_extra_requests_wait_in_line_instead_of_being_refused(
    harness, member, fund, settings, assert_audit_clean
):
    settings.GENERATIONS_PER_MEMBER = 1
    harness.openai.delay = 0.4
    bot = harness
    bot.start_bot()
    busy, other = member(), member()
    fund(busy, 3)
    fund(other, 1)

    mine = [bot.command("generate", user=busy, prompt=f"tree {i}") for i in range(3)]
    bot.wait_for(lambda: len(bot.openai.requests) >= 1)
    theirs = bot.command("generate", user=other, prompt="a river")
    answers = bot.answers(mine + [theirs], timeout=20)

    for answer in answers:
        assert_image(answer)
    assert account_balance(discord_user_id=busy) == 0
    busy_hash = bot.openai.requests[0].user
    assert bot.openai.max_overlap(user=busy_hash) == 1  # one at a time for this member...
    # ...while another member is not held up behind their whole line. (The three were sent at once, so which
    # of them is served last is up to the scheduler: compare with the last one served.)
    assert answers[3].at < max(answer.at for answer in answers[:3])
    # Every one of the member's requests but the first served was told its place in line, then that it started.
    waited = 0
    for sent in mine:
        edits = [call.content for call in bot.calls(sent) if call.route == "edit_message" and not call.uploads]
        if any("in line" in text for text in edits):
            assert "Making your image" in edits[-1], edits
            waited += 1
    assert waited == 2
    assert_audit_clean()


def test_the_global_cap_limits_images_in_the_making_and_shows_places_in_line(
    harness, member, fund, settings, assert_audit_clean
):
    settings.MAX_CONCURRENT_GENERATIONS = 2
    harness.openai.delay = 0.5
    bot = harness
    bot.start_bot()
    users = [member() for _ in range(6)]
    for user in users:
        fund(user, 1)

    sents = [bot.command("generate", user=user, prompt="a star") for user in users]
    answers = bot.answers(sents, timeout=20)

    for answer in answers:
        assert_image(answer)
    assert bot.openai.max_active == 2
    shown = [
        [int(n) for c in bot.calls(sent) if c.route == "edit_message" for n in re.findall(r"\*\*#(\d+)\*\*", c.content)]
        for sent in sents
    ]
    assert sum(1 for positions in shown if positions) >= 3, shown  # at least the last three waited
    assert max(max(positions, default=0) for positions in shown) >= 3, shown
    for positions in shown:
        assert positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions), shown
    assert_audit_clean()


def test_too_long_a_wait_in_line_is_refunded(harness, member, fund, settings, assert_audit_clean):
    settings.GENERATIONS_PER_MEMBER = 1
    settings.GENERATION_QUEUE_TIMEOUT_SECONDS = 0.3
    harness.openai.delay = 1.0
    bot = harness
    bot.start_bot()
    user = member()
    fund(user, 2)

    first = bot.command("generate", user=user, prompt="first")
    bot.wait_for(lambda: bot.openai.requests)
    second = bot.command("generate", user=user, prompt="second")

    refused = bot.answer(second)
    assert_private_refusal(bot, second, refused)
    assert "The line is too long right now" in refused.content and "refunded" in refused.content
    assert_image(bot.answer(first))
    assert account_balance(discord_user_id=user) == 1
    assert_audit_clean()


def test_stopping_the_bot_refunds_unfinished_images_and_tells_the_member(
    harness, member, fund, settings, assert_audit_clean
):
    settings.BOT_SHUTDOWN_GRACE_SECONDS = 0
    harness.openai.mode = "slow"
    harness.start_bot()
    user = member()
    fund(user, 1)

    sent = harness.command("generate", user=user, prompt="never finished")
    harness.wait_for(lambda: harness.openai.requests)
    harness.stop_bot()  # what SIGTERM does in runbot

    answer = harness.answer(sent)
    assert_private_refusal(harness, sent, answer)
    assert "The bot restarted before your image was finished" in answer.content
    assert Generation.objects.get().status == Generation.Status.REFUNDED
    assert account_balance(discord_user_id=user) == 1
    assert_audit_clean()


def test_the_prompt_is_shown_verbatim_without_pinging_anyone(bot, member, fund):
    user = member()
    fund(user, 1)

    answer = bot.answer(bot.command("generate", user=user, prompt="@everyone look: **bold** <@123>"))

    assert_image(answer)
    assert answer.json["allowed_mentions"] == {"parse": []}
    assert "\\*\\*bold\\*\\*" in answer.content  # markdown shown as typed, not rendered
    assert "@everyone" not in answer.content.replace("@\u200beveryone", "")


def test_the_placeholder_backend_needs_no_key(harness, member, fund, settings, assert_audit_clean):
    settings.IMAGE_BACKEND = "placeholder"
    settings.OPENAI_API_KEY = ""
    harness.start_bot()
    user = member()
    fund(user, 1)

    answer = harness.answer(harness.command("generate", user=user, prompt="keyless"))

    assert_image(answer)
    assert len(answer.uploads[0].data) > 1000  # a real picture, not the fake OpenAI's 8x8 one
    assert not harness.openai.requests
    assert Generation.objects.get().model == "placeholder"
    assert EPHEMERAL & answer.flags == 0
    assert_audit_clean()


class ProbingBackend:
    """Makes its image only after writing to the member's account from another connection: that write would
    wait on the lock if the bot held a transaction open across the backend call."""

    model = "probe"

    def __init__(self, discord_user_id: int) -> None:
        self.discord_user_id = discord_user_id
        self.write_went_through: bool | None = None

    def _grant(self) -> None:
        try:
            credits_grant(discord_user_id=self.discord_user_id, amount=1, memo="written mid-generation")
        finally:
            connections.close_all()

    def check(self, job: ImageJob) -> None:
        return None

    async def render(self, job: ImageJob, *, on_preview=None) -> ImageBatch:
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.to_thread(self._grant)), 3)
            self.write_went_through = True
        except TimeoutError:
            self.write_went_through = False
        slots = tuple(ImageSlot(index=i, png=tiny_png()) for i in range(job.count))
        return ImageBatch(model=self.model, slots=slots, usage=ImageUsage(), spend_micro_usd=None)

    async def generate(self, *, prompt: str, size: str, quality: str, user_hash: str) -> bytes:
        job = ImageJob(operation="generate", prompt=prompt, size=size, quality=quality, user_hash=user_hash)
        return (await self.render(job)).delivered[0]

    async def aclose(self) -> None:
        return None


def test_no_transaction_is_held_open_while_the_image_is_made(harness, member, fund, assert_audit_clean):
    user = member()
    fund(user, 1)
    backend = ProbingBackend(user)
    harness.start_bot(backend=backend)

    assert_image(harness.answer(harness.command("generate", user=user, prompt="a probe")))

    assert backend.write_went_through is True
    harness.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    assert account_balance(discord_user_id=user) == 1  # 1 - 1 for the image + 1 granted meanwhile
    assert_audit_clean()


def test_the_periodic_sweep_refunds_stale_generations_but_not_its_own(
    harness, member, fund, settings, assert_audit_clean
):
    settings.GENERATION_SWEEP_INTERVAL_SECONDS = 1
    settings.GENERATION_STALE_SECONDS = 60
    harness.openai.mode = "slow"
    harness.start_bot()
    crashed, waiting = member(), member()
    fund(crashed, 1)
    fund(waiting, 1)
    # Left behind by another process that died after the start-up refund; and one this bot is working on.
    orphan = generation_reserve(discord_user_id=crashed, prompt="orphan").generation_id
    harness.command("generate", user=waiting, prompt="slow but alive")
    harness.wait_for(lambda: harness.openai.requests)
    Generation.objects.update(created_at=timezone.now() - timedelta(hours=1))

    harness.wait_for(lambda: Generation.objects.get(pk=orphan).status == Generation.Status.REFUNDED, 5)

    assert account_balance(discord_user_id=crashed) == 1
    mine = Generation.objects.exclude(pk=orphan).get()
    assert mine.status == Generation.Status.RUNNING  # still being made: the sweep left it alone
    assert_audit_clean()


def test_what_the_image_service_charged_is_recorded_on_the_generation(bot, member, fund, settings, assert_audit_clean):
    """The usage the service reports, priced by IMAGE_SPEND_PRICES, lands on the generation (the dashboard's image
    cost and the daily spend guard read it)."""
    from tests.discordbot.fake_openai import IMAGE_TOKENS_OUT, TEXT_TOKENS

    settings.IMAGE_SPEND_PRICES = {
        settings.IMAGE_MODEL: {"input_text": 5, "input_image": 8, "output_image": 30, "output_text": 10}
    }
    user = member()
    fund(user, 1)

    bot.answer(bot.command("generate", user=user, prompt="a lighthouse at dusk"))

    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    assert Generation.objects.get().image_spend_micros == TEXT_TOKENS * 5 + IMAGE_TOKENS_OUT * 30
    assert_audit_clean()
