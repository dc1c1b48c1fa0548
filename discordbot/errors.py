"""The bot app's domain errors. Every message is safe to show a member as it is.

The cogs turn these (and `vouchers.errors.VoucherError`) into ephemeral replies; see `discordbot.replies`.
"""


class BotError(Exception):
    """Base domain error: `message` is member-safe, `reason` is a stable machine-readable cause."""

    reason = "error"
    default_message = "That could not be done."

    def __init__(self, message: str | None = None, reason: str | None = None) -> None:
        self.message = message or self.default_message
        if reason is not None:
            self.reason = reason
        super().__init__(self.message)


class GenerationError(BotError):
    """An image could not be made or delivered. Raised by the image backends and the generation services."""

    reason = "generation_failed"
    default_message = "The image could not be made."


class RedeemRateLimited(BotError):
    reason = "redeem_rate_limited"
    default_message = "Too many failed voucher attempts. Please wait a while before trying again."


class ImageInputError(GenerationError):
    """A picture a member gave (or the options around it) cannot be used: refused before anything is charged."""

    reason = "bad_input"
    default_message = "That picture cannot be used."
