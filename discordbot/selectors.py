"""Reads the bot shares: a member's history, with the generation behind each image charge or refund."""

from dataclasses import dataclass
from datetime import datetime

from discordbot.models import Generation
from vouchers.selectors import ledger_history


@dataclass(frozen=True)
class HistoryEntry:
    delta: int
    kind: str  # the ledger kind's label
    memo: str
    created_at: datetime
    prompt: str | None  # for an image charge or refund
    message_url: str | None  # the image message, once delivered


def member_history(*, discord_user_id: int, limit: int = 10) -> list[HistoryEntry]:
    """The member's latest credit movements, newest first."""
    entries = ledger_history(discord_user_id=discord_user_id, limit=limit)
    generations = Generation.objects.in_bulk({entry.generation_id for entry in entries if entry.generation_id})
    history = []
    for entry in entries:
        generation = generations.get(entry.generation_id)
        history.append(
            HistoryEntry(
                delta=entry.delta,
                kind=entry.get_kind_display(),
                memo=entry.memo,
                created_at=entry.created_at,
                prompt=generation.prompt if generation else None,
                message_url=generation.message_url if generation else None,
            )
        )
    return history
