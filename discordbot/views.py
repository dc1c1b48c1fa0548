"""Message components. The Regenerate button survives restarts: it is a DynamicItem whose custom_id carries the
generation id, so any running bot process can answer it without having sent it."""

from typing import Any

import discord

from discordbot.replies import report_error


class RegenerateButton(
    discord.ui.DynamicItem[discord.ui.Button], template=r"regenerate:(?P<generation_id>[0-9]{1,19})"
):
    def __init__(self, generation_id: int, *, label: str = "Regenerate") -> None:
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji="\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}",
                style=discord.ButtonStyle.secondary,
                custom_id=f"regenerate:{generation_id}",
            )
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> "RegenerateButton":
        return cls(int(match["generation_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Spend another credit on the same prompt and options; the new image comes as a new message."""
        await interaction.response.defer(thinking=True)
        try:
            await interaction.client.pipeline.regenerate(interaction, source_id=self.generation_id)
        except Exception as exc:
            await report_error(interaction, exc)


def image_view(generation_id: int, *, cost: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RegenerateButton(generation_id, label="Regenerate" if cost == 1 else f"Regenerate ({cost} credits)"))
    return view
