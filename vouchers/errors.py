"""The vouchers app's domain errors. Every message is safe to show a member or an operator as it is."""


class VoucherError(Exception):
    """Base domain error: `message` is user-safe, `code` is a stable machine-readable reason."""

    code = "voucher_error"
    default_message = "That could not be done."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class InvalidCode(VoucherError):
    code = "invalid_code"
    default_message = "That doesn't look like a voucher code. Codes look like K7QH-2M9D-XR4T-8BWE."


class VoucherNotFound(VoucherError):
    code = "not_found"
    default_message = "No voucher has that code. Check it for typos."


class VoucherAlreadyRedeemed(VoucherError):
    code = "already_redeemed"
    default_message = "That voucher has already been redeemed."


class VoucherVoid(VoucherError):
    code = "void"
    default_message = "That voucher is no longer valid."


class InvalidAmount(VoucherError):
    code = "invalid_amount"
    default_message = "The amount must be a whole number of credits greater than zero."


class InvalidAccount(VoucherError):
    code = "invalid_account"
    default_message = "That is not a valid Discord user id."


class InsufficientCredits(VoucherError):
    code = "insufficient_credits"
    default_message = "You don't have enough credits for that."


class RefundNotAllowed(VoucherError):
    code = "refund_not_allowed"
    default_message = "That charge can't be refunded."


class AlreadyRefunded(VoucherError):
    code = "already_refunded"
    default_message = "That charge has already been refunded."
