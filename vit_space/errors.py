"""The one exception type for bad user input, so every runner can turn it into a one-line error."""


class BadInput(ValueError):
    """Input that does not fit what was expected; the message names the culprit and the expectation."""
