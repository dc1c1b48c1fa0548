"""Message components. The buttons on an image survive restarts: they are DynamicItems whose custom_id carries
the generation id, so any running bot process can answer them without having sent them."""

from typing import Any

import discord
from django.conf import settings

from discordbot.bridge import run_service
from discordbot.entitlements import StoreSku
from discordbot.replies import plural, report_error, send_private
from discordbot.services import MAX_PROMPT_LENGTH, generation_owner_id, generation_prompt_for_owner
from storefront.tokens import buy_token_make, discord_name_label


class _GenerationButton:
    """What every button on an image shares: a custom_id "<prefix>:<generation id>", rebuilt from that id by any
    bot process (DynamicItem.from_custom_id). Each subclass names its prefix, label, emoji and template."""

    PREFIX: str
    LABEL: str
    EMOJI: str

    def __init__(self, generation_id: int, *, label: str | None = None) -> None:
        super().__init__(  # DynamicItem's
            discord.ui.Button(
                label=label or self.LABEL,
                emoji=self.EMOJI,
                style=discord.ButtonStyle.secondary,
                custom_id=f"{self.PREFIX}:{generation_id}",
            )
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /):
        return cls(int(match["generation_id"]))


class RegenerateButton(
    _GenerationButton,
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"regenerate:(?P<generation_id>[0-9]{1,19})",
):
    PREFIX, LABEL, EMOJI = "regenerate", "Regenerate", "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}"

    async def callback(self, interaction: discord.Interaction) -> None:
        """Spend credits again on the same prompt and options; the new image comes as a new message."""
        try:
            await interaction.client.pipeline.regenerate(interaction, source_id=self.generation_id)
        except Exception as exc:
            await report_error(interaction, exc)


class VaryButton(
    _GenerationButton,
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"vary:(?P<generation_id>[0-9]{1,19})",
):
    """An edit of this result with the same prompt and options, read from the message the button is on."""

    PREFIX, LABEL, EMOJI = "vary", "Vary", "\N{ARTIST PALETTE}"

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await interaction.client.pipeline.vary(interaction, source_id=self.generation_id)
        except Exception as exc:
            await report_error(interaction, exc)


class PromptModal(discord.ui.Modal):
    """The Edit button's form: the prompt, prefilled, to change and rerun. Lives in this process only (a modal
    opened before a restart cannot be submitted after it; Discord then says the interaction failed, nothing is
    charged)."""

    def __init__(self, generation_id: int, prompt: str) -> None:
        super().__init__(title="Change the prompt", timeout=600, custom_id=f"prompt-modal:{generation_id}")
        self.generation_id = generation_id
        self.prompt = discord.ui.TextInput(
            label="Prompt",
            style=discord.TextStyle.paragraph,
            default=prompt[:MAX_PROMPT_LENGTH],
            min_length=1,
            max_length=MAX_PROMPT_LENGTH,
            custom_id="prompt",
        )
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:
            await interaction.client.pipeline.regenerate(
                interaction, source_id=self.generation_id, prompt=self.prompt.value
            )
        except Exception as exc:
            await report_error(interaction, exc)


class EditButton(
    _GenerationButton,
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"editprompt:(?P<generation_id>[0-9]{1,19})",
):
    """Opens a form to change the prompt, then makes the result again with the new prompt (charged anew)."""

    PREFIX, LABEL, EMOJI = "editprompt", "Edit", "\N{PENCIL}"

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            prompt = await run_service(
                generation_prompt_for_owner, generation_id=self.generation_id, discord_user_id=interaction.user.id
            )
            await interaction.response.send_modal(PromptModal(self.generation_id, prompt))
        except Exception as exc:
            await report_error(interaction, exc)


class DeleteButton(
    _GenerationButton,
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"delete:(?P<generation_id>[0-9]{1,19})",
):
    """Lets the member who asked for an image remove its post from the channel (the credit stays spent)."""

    PREFIX, LABEL, EMOJI = "delete", "Delete", "\N{WASTEBASKET}"

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            requester = await run_service(generation_owner_id, generation_id=self.generation_id)
            if requester != interaction.user.id:
                await send_private(interaction, "Only the member who asked for this image can delete it.")
                return
            # For a button, the original response of a deferred update is the message the button is on.
            await interaction.response.defer()
            await interaction.delete_original_response()
        except Exception as exc:
            await report_error(interaction, exc)


def cost_label(verb: str, cost: int) -> str:
    return f"{verb} ({plural(cost)})"


def image_view(
    generation_id: int, *, cost: int, vary_cost: int | None = None, regenerate: bool = True, delete: bool = True
) -> discord.ui.View:
    """The buttons under a result. `cost` is what Regenerate charges (the whole request again). An edit's
    pictures are not kept, so only prompt-only results offer Regenerate; an ephemeral result needs no Delete."""
    view = discord.ui.View(timeout=None)
    if regenerate:
        label = "Regenerate" if cost == 1 else f"Regenerate ({cost} credits)"
        view.add_item(RegenerateButton(generation_id, label=label))
        view.add_item(EditButton(generation_id, label=cost_label("Edit", cost)))
    if vary_cost is not None:
        view.add_item(VaryButton(generation_id, label=cost_label("Vary", vary_cost)))
    if delete:
        view.add_item(DeleteButton(generation_id))
    # Every button is a DynamicItem, answered through `add_dynamic_items` by whichever process gets the click: a
    # stopped view is only sent, not also registered in discord.py's view store for each image posted (CPU on the
    # event loop at every delivery, for nothing).
    view.stop()
    return view


def buy_url(user: discord.abc.User) -> str:
    # The name rides in the signed token so the shop can show whom the link credits and ask to confirm.
    name = discord_name_label(username=user.name, display_name=user.display_name)
    return f"{settings.SITE_URL}/?for={buy_token_make(discord_user_id=user.id, discord_name=name)}"


# A message holds at most 25 buttons (5 rows of 5); one is the Stripe link.
MAX_PREMIUM_BUTTONS = 24


def buy_view(user: discord.abc.User, skus: list[StoreSku] = ()) -> discord.ui.View:
    """The Stripe link, then Discord's own purchase button for each pack sold as a SKU (`skus`, in shop order).

    A premium button carries only its SKU id: Discord draws its name and price, and refuses a label, emoji,
    custom_id or url on it. Pressing it opens Discord's checkout, not an interaction; the purchase arrives as an
    entitlement (see cogs/store.py)."""
    view = discord.ui.View(timeout=None)  # link and premium buttons: nothing to listen for
    view.add_item(discord.ui.Button(label="Buy credits", url=buy_url(user), emoji="\N{SHOPPING TROLLEY}"))
    for sku in skus[:MAX_PREMIUM_BUTTONS]:
        view.add_item(discord.ui.Button(sku_id=sku.sku_id))
    return view
