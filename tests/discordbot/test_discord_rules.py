"""Discord's documented rules, enforced by the fake and kept by the bot.

The first test shows the fake refuses what Discord refuses (so the rest cannot pass by leniency); the others
drive the real bot through each rule: private answers after each kind of deferral, the 3-second and 15-minute
limits, 2,000 characters, rate limits, uploads whose outcome is unknown, and what members expect.
"""

import asyncio
import re

import aiohttp
import pytest

from discordbot.models import Generation
from tests.discordbot.fake_discord import EPHEMERAL, Call, FakeDiscord, Sent
from tests.discordbot.faults import database_faults, reads_account_of, updates_generation_to
from tests.discordbot.harness import BotHarness
from vouchers.models import LedgerEntry
from vouchers.selectors import account_balance
from vouchers.services import credits_grant

pytestmark = pytest.mark.django_db(transaction=True)


def private_only(bot: BotHarness, sent: Sent, words: str) -> dict:
    """The member got a private message with `words`; the channel has nothing from this interaction and never
    saw those words. Returns the private message."""
    bot.wait_for(lambda: any(words in m["content"] for m in bot.discord.private(sent.token)), 20)
    bot.wait_for(lambda: not bot.discord.visible(sent.token), 10)
    [message] = [m for m in bot.discord.private(sent.token) if words in m["content"]]
    assert message["flags"] & EPHEMERAL
    assert not bot.discord.channel_saw(message["content"])
    refused = [(c.route, c.status, c.json) for c in bot.calls(sent) if c.status >= 400]
    assert not refused, refused  # the bot never sent anything Discord refuses
    return message


def is_upload(call: Call) -> bool:
    return call.route == "edit_message" and bool(call.uploads)


def refunds(generation_id: int) -> int:
    return LedgerEntry.objects.filter(generation_id=generation_id, kind=LedgerEntry.Kind.REFUND).count()


# --- the fake refuses what Discord refuses ------------------------------------------------------------------------


class NoBot:
    """Stands in for a connected bot's gateway socket, so interactions can be created without one."""

    async def send_str(self, data: str) -> None:
        return None


def test_the_fake_refuses_what_discord_documents_as_refused(harness):
    fake: FakeDiscord = harness.discord
    fake.initial_response_seconds = 0.5
    fake.token_lifetime = 2.0

    async def scenario(session: aiohttp.ClientSession) -> dict[str, tuple[int, object]]:
        results: dict[str, tuple[int, object]] = {}

        async def call(name: str, method: str, path: str, **kwargs) -> None:
            async with session.request(method, fake.api_base + path, **kwargs) as response:
                body = await response.json() if response.content_type == "application/json" else None
                results[name] = (response.status, (body or {}).get("code"), dict(response.headers))

        def webhook(sent: Sent) -> str:
            return f"/webhooks/{fake.APP_ID}/{sent.token}"

        def callback(sent: Sent) -> str:
            return f"/interactions/{sent.id}/{sent.token}/callback"

        async def interaction() -> Sent:
            return await fake.send_command("balance", user_id=1)

        fake.webhook_rate = (100, 2.0)  # the rate limit is exercised on its own below
        late = await interaction()
        await asyncio.sleep(0.6)
        await call("late initial response", "POST", callback(late), json={"type": 5})
        sent = await interaction()
        await call("defer", "POST", callback(sent), json={"type": 5, "data": {"flags": EPHEMERAL}})
        await call("second acknowledgement", "POST", callback(sent), json={"type": 4, "data": {"content": "x"}})
        await call("2,001 characters", "POST", webhook(sent), json={"content": "x" * 2001})
        button = {"type": 2, "style": 2, "label": "ok", "custom_id": "c" * 101}
        await call(
            "custom_id of 101", "POST", webhook(sent), json={"components": [{"type": 1, "components": [button]}]}
        )
        button = {"type": 2, "style": 2, "label": "l" * 81, "custom_id": "c"}
        await call("label of 81", "POST", webhook(sent), json={"components": [{"type": 1, "components": [button]}]})
        await call("empty message", "POST", webhook(sent), json={"content": ""})
        form = aiohttp.FormData()
        form.add_field("payload_json", '{"content": "big"}', content_type="application/json")
        form.add_field("files[0]", b"\0" * (fake.attachment_size_limit + 1), filename="big.png")
        await call("attachment over the limit", "POST", webhook(sent), data=form)
        # The first followup after a private deferral takes its place, private, whatever its flags say.
        await call("first followup", "POST", webhook(sent), json={"content": "answer"})
        fake.webhook_rate = (5, 2.0)
        fake._webhook_hits.clear()
        for i in range(6):
            await call(f"burst {i}", "GET", webhook(sent) + "/messages/@original")
        # Deleting a public deferral, then following up: what Discord has answered with 10008.
        public = await interaction()
        await call("public defer", "POST", callback(public), json={"type": 5})
        await call("delete the deferral", "DELETE", webhook(public) + "/messages/@original")
        await call("followup after deleting the deferral", "POST", webhook(public), json={"content": "x", "flags": 64})
        fake.webhook_rate = (100, 2.0)
        await asyncio.sleep(2.1)
        await call("after the token expired", "POST", webhook(sent), json={"content": "late"})
        return results

    async def run() -> dict:
        async with aiohttp.ClientSession(headers={"Authorization": "Bot fake"}) as session:
            fake._sockets[NoBot()] = iter(range(10**6))  # type: ignore[index]  # no bot: the REST rules alone
            try:
                return await scenario(session)
            finally:
                fake._sockets.clear()

    results = harness.run(run())

    def status(name: str) -> tuple[int, object]:
        return results[name][:2]

    assert status("late initial response") == (404, 10062)
    assert status("second acknowledgement") == (400, 40060)
    assert status("2,001 characters") == (400, 50035)
    assert status("custom_id of 101") == (400, 50035)
    assert status("label of 81") == (400, 50035)
    assert status("empty message") == (400, 50006)
    assert status("attachment over the limit") == (413, 40005)
    assert status("first followup")[0] == 200
    [answer] = [m for m in fake.messages.values() if m["content"] == "answer"]
    assert answer["flags"] & EPHEMERAL  # took the private deferral's visibility
    bursts = [results[f"burst {i}"] for i in range(6)]
    assert [s for s, _, _ in bursts].count(429) >= 1
    limited = next(headers for s, _, headers in bursts if s == 429)
    assert limited["Via"] and float(limited["X-RateLimit-Reset-After"]) > 0
    assert status("followup after deleting the deferral") == (404, 10008)
    assert status("after the token expired") == (401, 50027)


# --- private answers after each kind of deferral ------------------------------------------------------------


def test_refusal_after_a_private_deferral_stays_private(bot, member):
    sent = bot.command("redeem", user=member(), code="ZZZZ-ZZZZ-ZZZZ-ZZZZ")
    private_only(bot, sent, "No voucher has that code")


def test_unexpected_error_after_a_private_deferral_stays_private(bot, member, monkeypatch, fund):
    user = member()
    fund(user, 3)
    with database_faults(monkeypatch) as faults:
        faults.add(reads_account_of(user), times=1)
        sent = bot.command("balance", user=user)
        private_only(bot, sent, "Something went wrong on our side")


def test_refusal_after_a_public_deferral_stays_private(bot, member, fund, assert_audit_clean):
    user = member()
    fund(user, 1)
    bot.openai.mode = "moderation"
    sent = bot.command("generate", user=user, prompt="something blocked")
    assert bot.deferral(sent).json["type"] == 5 and not bot.deferral(sent).ephemeral  # accepted: public
    private_only(bot, sent, "safety system blocked this prompt")
    assert account_balance(discord_user_id=user) == 1
    assert_audit_clean()


def test_unexpected_error_after_a_public_deferral_stays_private(
    harness, member, fund, monkeypatch, settings, assert_audit_clean
):
    # A request that finds a free slot is reserved running (no database step between its deferral and the image
    # service), so the error comes where one still is: a request that waited in line, publicly, and then fails
    # to start.
    settings.MAX_CONCURRENT_GENERATIONS = 1
    harness.openai.delay = 1.0
    bot = harness
    bot.start_bot()
    first, user = member(), member()
    fund(first, 1)
    fund(user, 1)
    with database_faults(monkeypatch) as faults:
        faults.add(updates_generation_to("running"), times=1)
        ahead = bot.command("generate", user=first, prompt="the image ahead")
        bot.wait_for(lambda: bot.openai.requests)
        sent = bot.command("generate", user=user, prompt="an unlucky image")
        private_only(bot, sent, "Something went wrong on our side")
        assert bot.answer(ahead, 30).uploads
    mine = Generation.objects.get(account__discord_user_id=user)
    assert mine.status == Generation.Status.REFUNDED and mine.started_at is None
    assert account_balance(discord_user_id=user) == 1
    assert len(bot.openai.requests) == 1  # only the image ahead was made
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    assert_audit_clean()


def test_a_slow_database_defers_privately_and_a_refusal_then_stays_private(bot, member, monkeypatch):
    user = member()  # no credits
    with database_faults(monkeypatch) as faults:
        faults.add(reads_account_of(user), times=1, delay=2.5, fail=False)
        sent = bot.command("generate", user=user, prompt="a boat")
        deferral = bot.deferral(sent)
        message = private_only(bot, sent, "your balance is 0 credits")
    assert deferral.at - sent.at < 3.0 and deferral.json["type"] == 5 and deferral.ephemeral
    [buy] = [c for row in message["components"] for c in row["components"]]
    assert buy["label"] == "Buy credits" and buy["url"].startswith("http")
    assert not bot.discord.channel_saw("a boat")


def test_a_slow_database_defers_privately_then_posts_the_accepted_image_publicly(
    bot, member, fund, monkeypatch, assert_audit_clean
):
    user = member()
    fund(user, 2)
    with database_faults(monkeypatch) as faults:
        faults.add(reads_account_of(user), times=1, delay=2.5, fail=False)
        sent = bot.command("generate", user=user, prompt="a slow lighthouse")
        upload = bot.wait_for(lambda: next((c for c in bot.calls(sent) if is_upload(c) and c.status == 200), None))
    assert bot.deferral(sent).ephemeral
    [image_message] = bot.discord.visible(sent.token)
    assert image_message["attachments"] and "a slow lighthouse" in image_message["content"]
    [accepted] = bot.discord.private(sent.token)  # the private deferral, resolved by the first followup
    assert "image will be posted in this channel" in accepted["content"]
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    generation = Generation.objects.get()
    assert generation.message_id == int(image_message["id"]) and upload.message_id == image_message["id"]
    assert account_balance(discord_user_id=user) == 1
    assert_audit_clean()


# --- rate limits and the token's lifetime --------------------------------------------------------------------


def test_a_429_on_the_interaction_webhook_is_waited_out(bot, member, fund, assert_audit_clean):
    user = member()
    fund(user, 2)
    # Every kind of webhook call the bot makes meets a 429 once: the upload, and a refusal's three calls.
    bot.discord.rate_limit(is_upload, retry_after=0.3)
    sent = bot.command("generate", user=user, prompt="rate limited")
    answer = bot.answer(sent)
    assert answer.uploads and answer.status == 200
    calls = bot.calls(sent)
    assert [c.status for c in calls if is_upload(c)] == [429, 200]
    retry = [c.at for c in calls if is_upload(c)]
    assert retry[1] - retry[0] >= 0.3  # retry_after honoured

    bot.openai.mode = "moderation"
    for route in ("edit_message", "followup", "delete_message"):
        bot.discord.rate_limit(lambda c, route=route: c.route == route, retry_after=0.2)
    refused = bot.command("generate", user=user, prompt="blocked and limited")
    bot.wait_for(lambda: bot.discord.rate_limited >= 4, 20)
    bot.wait_for(lambda: any("blocked" in m["content"] for m in bot.discord.private(refused.token)), 20)
    bot.wait_for(lambda: not bot.discord.visible(refused.token), 20)
    assert not bot.discord.channel_saw("safety system blocked")
    assert account_balance(discord_user_id=user) == 1  # the image charged, the refusal refunded
    assert_audit_clean()


def test_an_expired_token_means_not_delivered_and_refunded(bot, member, fund, assert_audit_clean):
    bot.discord.token_lifetime = 1.0
    bot.openai.delay = 1.5
    user = member()
    fund(user, 1)
    bot.command("generate", user=user, prompt="too late")
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.REFUNDED).exists(), 20)
    assert not [c for c in bot.discord.snapshot() if is_upload(c) and c.status == 200]
    assert account_balance(discord_user_id=user) == 1
    assert_audit_clean()


# --- uploads whose outcome is unknown, and database hiccups after delivery --------------------------------------


@pytest.mark.parametrize("arrived", [True, False])
def test_an_upload_without_an_answer_is_settled_by_asking_discord(bot, member, fund, arrived, assert_audit_clean):
    user = member()
    fund(user, 1)
    bot.discord.drop(is_upload, applied=arrived)

    sent = bot.command("generate", user=user, prompt="lost answer")
    final = Generation.Status.SUCCEEDED if arrived else Generation.Status.REFUNDED
    bot.wait_for(lambda: Generation.objects.filter(status=final).exists(), 20)

    asked = [c for c in bot.calls(sent) if c.route == "get_message" and c.message_id == "@original"]
    assert asked, "the bot must ask Discord, not guess"
    generation = Generation.objects.get()
    if arrived:
        assert refunds(generation.pk) == 0 and account_balance(discord_user_id=user) == 0
        [message] = bot.discord.visible(sent.token)
        assert message["attachments"] and generation.message_id == int(message["id"])
    else:
        private_only(bot, sent, "Discord did not accept the image")
        assert refunds(generation.pk) == 1 and account_balance(discord_user_id=user) == 1
    assert_audit_clean()


def test_an_upload_slower_than_its_timeout_is_settled_by_asking_discord(
    harness, member, fund, settings, assert_audit_clean
):
    settings.DISCORD_UPLOAD_TIMEOUT_SECONDS = 1
    harness.start_bot()
    user = member()
    fund(user, 1)
    harness.discord.hold(is_upload, seconds=3)

    harness.command("generate", user=user, prompt="slow upload")
    harness.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists(), 20)

    assert refunds(Generation.objects.get().pk) == 0 and account_balance(discord_user_id=user) == 0
    assert_audit_clean()


def test_the_delivery_record_survives_database_hiccups(bot, member, fund, monkeypatch, assert_audit_clean):
    user = member()
    fund(user, 1)
    with database_faults(monkeypatch) as faults:
        hiccup = faults.add(updates_generation_to("succeeded"), times=3)
        sent = bot.command("generate", user=user, prompt="recorded at last")
        bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists(), 30)
    assert hiccup.hits == 3
    generation = Generation.objects.get()
    assert refunds(generation.pk) == 0 and account_balance(discord_user_id=user) == 0
    [message] = bot.discord.visible(sent.token)
    assert message["attachments"]
    assert_audit_clean()


# --- 2,000 characters, custom_ids, and what members expect -------------------------------------------------------


def test_the_longest_prompt_of_markdown_still_fits_in_a_message(bot, member, fund):
    user = member()
    fund(user, 1)
    answer = bot.answer(bot.command("generate", user=user, prompt="*_" * 500))
    assert answer.status == 200 and answer.uploads and len(answer.content) <= 2000


def test_history_with_ten_long_memos_fits_and_links_to_images(bot, member, fund):
    user = member()
    fund(user, 2)
    image = bot.answer(bot.command("generate", user=user, prompt="a very long prompt " * 50))
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    for i in range(10):
        credits_grant(discord_user_id=user, amount=1, memo=f"{i} " + "m" * 198)

    sent = bot.command("history", user=user)
    answer = private_only(bot, sent, "Your latest")

    assert len(answer["content"]) <= 2000
    lines = answer["content"].splitlines()
    assert lines[0].startswith("Your latest") and len(lines) >= 2
    assert all(len(line) < 200 for line in lines)  # memos shortened

    # With fewer grants, the image line shows its prompt (shortened) and links to the image message.
    other = member()
    fund(other, 1)
    mine = bot.command("generate", user=other, prompt="a small red boat on a calm sea " * 5)
    bot.answer(mine)
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).count() == 2)
    text = private_only(bot, bot.command("history", user=other), "Your latest")["content"]
    generation = Generation.objects.get(account__discord_user_id=other)
    url = f"https://discord.com/channels/{FakeDiscord.GUILD_ID}/{FakeDiscord.CHANNEL_ID}/{generation.message_id}"
    assert f"(<{url}>)" in text
    assert "a small red boat on a calm sea" in text and "\N{HORIZONTAL ELLIPSIS}" in text
    assert image.status == 200


def test_help_is_private_and_shows_the_price_table(bot, member, settings):
    sent = bot.command("help", user=member())
    answer = bot.answer(sent)
    assert answer.route == "callback" and answer.json["type"] == 4 and answer.ephemeral
    for size, qualities in settings.GENERATION_COSTS.items():
        width, _, height = size.partition("x")
        row = next(line for line in answer.content.splitlines() if f"{width}\N{MULTIPLICATION SIGN}{height}" in line)
        costs = row.split(f"{width}\N{MULTIPLICATION SIGN}{height}", 1)[1]
        assert re.findall(r"\d+", costs) == [str(cost) for cost in qualities.values()]
    assert not bot.discord.channel_saw("Prices")


def test_the_requester_can_delete_their_image_post_and_nobody_else_can(bot, member, fund, assert_audit_clean):
    owner, other = member(), member()
    fund(owner, 1)
    first = bot.command("generate", user=owner, prompt="mine to delete")
    delete = next(b for b in bot.answer(first).buttons if b["custom_id"].startswith("delete:"))
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    message_id = bot.discord.originals[first.token]

    refused = bot.click(delete["custom_id"], user=other, message_id=message_id)
    private_only(bot, refused, "Only the member who asked for this image can delete it")
    assert bot.discord.visible(first.token)

    click = bot.click(delete["custom_id"], user=owner, message_id=message_id)
    bot.wait_for(lambda: not bot.discord.visible(first.token))
    assert [c.route for c in bot.calls(click)] == ["callback", "delete_message"]
    assert bot.calls(click)[0].json["type"] == 6  # a deferred update: nothing new is posted
    assert Generation.objects.get().status == Generation.Status.SUCCEEDED  # the credit stays spent
    assert_audit_clean()


# --- a fair line ----------------------------------------------------------------------------------------------


def most_waiting_at_once(discord_user_id: int) -> int:
    """From the records: the most of a member's accepted generations that were waiting (created, not started)."""
    rows = Generation.objects.filter(account__discord_user_id=discord_user_id).values_list("created_at", "started_at")
    events = sorted([(created, 1) for created, _ in rows] + [(started, -1) for _, started in rows if started])
    most = waiting = 0
    for _, change in events:
        waiting += change
        most = max(most, waiting)
    return most


def test_eighty_requests_from_one_member(harness, member, fund, settings, assert_audit_clean):
    settings.MAX_WAITING_PER_MEMBER = 3
    settings.GENERATIONS_PER_MEMBER = 1
    harness.openai.delay = 1.0
    bot = harness
    bot.start_bot()
    user, neighbour = member(), member()
    fund(user, 100)
    fund(neighbour, 1)

    sents = [bot.command("generate", user=user, prompt=f"flood {i}") for i in range(80)]
    theirs = bot.command("generate", user=neighbour, prompt="just one")
    answers = bot.answers(sents, timeout=120)

    images = [a for a in answers if a.uploads]
    refused = [a for a in answers if not a.uploads]
    assert images and len(refused) >= 40, (len(images), len(refused))
    for answer in refused:
        assert answer.route == "callback" and answer.ephemeral and "waiting in line" in answer.content
        assert "Nothing was charged" in answer.content
    assert most_waiting_at_once(user) <= 3
    assert bot.answer(theirs, 30).uploads  # the flood does not lock others out
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).count() == len(images) + 1)
    assert account_balance(discord_user_id=user) == 100 - len(images)
    # Discord calls stay proportional to accepted work: a refusal is one call; an image a handful.
    calls = bot.discord.rest_calls({s.token for s in sents})
    assert len(calls) <= len(refused) + 5 * len(images), len(calls)
    edits = [c for c in calls if c.route == "edit_message" and not c.uploads]
    assert len(edits) <= 3 * len(images)
    assert all(c.status < 400 for c in calls)
    assert_audit_clean()


def test_position_updates_only_for_the_first_places_and_bounded_in_rate(harness, member, fund, settings):
    settings.MAX_CONCURRENT_GENERATIONS = 1
    harness.openai.delay = 0.25
    bot = harness
    bot.start_bot()
    users = [member() for _ in range(20)]
    for user in users:
        fund(user, 1)

    sents = [bot.command("generate", user=user, prompt="a line") for user in users]
    bot.answers(sents, timeout=60)

    told_far_back = 0
    for sent in sents:
        edits = [c for c in bot.calls(sent) if c.route == "edit_message" and not c.uploads]
        positions = [c for c in edits if "in line" in c.content]
        times = [c.at for c in positions]
        # At most one per 2 s in the bot (the fake sees them with some jitter on a loaded machine).
        assert all(b - a >= 1.0 for a, b in zip(times, times[1:], strict=False)), times
        for call in positions:
            match = re.search(r"\*\*#(\d+)\*\*", call.content)
            assert match is None or int(match.group(1)) <= 10
        far_back = [c for c in positions if "more than 10" in c.content]
        if far_back:  # entered beyond the shown places: told once, then nothing until within them
            assert far_back == positions[:1], [c.content for c in positions]
            told_far_back += 1
    assert told_far_back >= 1
