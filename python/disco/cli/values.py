"""Checks of one value the user gives, in a configuration or on the command line.

Each returns the value as the library takes it; a refusal is a :class:`UserError` naming the
key (``sampler.beta``, ``--beta``) it came from.
"""

from __future__ import annotations

from typing import Any

from disco.cli.errors import UserError

__all__ = ["check_acceptance_rate", "real", "user_beta"]


def real(value: Any) -> bool:
    """Whether ``value`` is a real number as TOML gives one (an int or a float, not a boolean)."""
    return not isinstance(value, bool) and isinstance(value, int | float)


def user_beta(beta: Any, key: str) -> float:
    """A QRS β the user gave: a number (not a string or a boolean), positive and finite.

    The positive-and-finite check is :func:`disco._beta.check_beta`'s; a refusal is a
    :class:`UserError` naming ``key``.
    """
    from disco._beta import check_beta as checked

    try:
        if not real(beta):
            raise ValueError(f"beta {beta!r} is not a number")
        return checked(beta, "beta")
    except (ValueError, OverflowError) as err:
        raise UserError(str(err), key, "use beta > 0") from None


def check_acceptance_rate(rate: Any, key: str) -> float:
    """A QRS acceptance rate to choose β for: in (0, 1]."""
    if not real(rate) or not 0 < rate <= 1:
        raise UserError(
            f"acceptance rate {rate!r} is outside (0, 1]", key, "use 0 < acceptance_rate <= 1"
        )
    return float(rate)
