"""URL converters of the merchant portal."""


class PublicPaymentId:
    """pay_ and 24 letters or digits: anything else is not a payment and answers 404 before
    any query (no odd bytes reach the database)."""

    regex = "pay_[A-Za-z0-9]{24}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value
