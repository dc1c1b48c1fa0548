"""The storefront's one domain error. Its message is safe to show a buyer as it is."""


class CheckoutError(Exception):
    """Checkout or fulfilment could not go ahead. `message` is user-safe; details stay in the chained cause.

    `http_status` is what a web view should answer: 400 for a bad request from the buyer, 404 for something
    unknown, 502 when the payment provider failed or could not be reached.
    """

    default_message = "Something went wrong with the checkout. You have not been charged; please try again."

    def __init__(self, message: str | None = None, *, http_status: int = 400) -> None:
        self.message = message or self.default_message
        self.http_status = http_status
        super().__init__(self.message)
