"""The one exception type for bad user input, so every runner can turn it into a one-line error."""


class BadInput(ValueError):
    """Input that does not fit what was expected; the message names the culprit and the expectation."""


def check_flags(config, checks) -> None:
    """Raise for the first failed (flag, ok, expected) check, naming the flag and its value
    (read from `config`'s attribute of the same name): '--flag value: expected ...'."""
    for flag, ok, expected in checks:
        if not ok:
            value = getattr(config, flag[2:].replace("-", "_"))
            raise BadInput(f"{flag} {value}: expected {expected}")
