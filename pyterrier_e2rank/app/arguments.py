"""argparse types shared by every ``e2rank`` subcommand, so that a count of 0, a negative rate or ``nan``
is refused while the command line is parsed, in one wording: argparse names the flag and the type the
value (``argument --top-k: must be an integer >= 1, got '0'``)."""
import argparse
import math

#: The seeds ``accelerate.utils.set_seed`` accepts (NumPy's range).
MAX_SEED = 2**32 - 1


def _integer(text: str, minimum: int, maximum=None) -> int:
    wanted = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def _number(text: str, wanted: str, accept) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
    if not math.isfinite(value) or not accept(value):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1: counts, sizes, budgets and steps, where 0 would silently do nothing."""
    return _integer(text, 1)


def seed(text: str) -> int:
    """A random seed: an integer from 0 to ``MAX_SEED``."""
    return _integer(text, 0, MAX_SEED)


def positive_float(text: str) -> float:
    """A finite number > 0: learning rates, temperatures, epochs."""
    return _number(text, "a finite number > 0", lambda value: value > 0)


def non_negative_float(text: str) -> float:
    """A finite number >= 0: loss weights (0 switches a loss off)."""
    return _number(text, "a finite number >= 0", lambda value: value >= 0)


def fraction(text: str) -> float:
    """A number from 0 to 1: ratios such as the warm-up share of the steps."""
    return _number(text, "a number from 0 to 1", lambda value: 0 <= value <= 1)
