"""The exceptions medaudit raises, and the one message template for bad parameters.

Every public entry point validates its inputs and raises one of these; the CLI turns
them into a single line on stderr and exit code 2.
"""

from __future__ import annotations

__all__ = ["InvalidInputError", "InvalidParameterError", "MedauditError", "param_error"]


class MedauditError(Exception):
    """Base class of every error medaudit raises on purpose."""


class InvalidParameterError(MedauditError, ValueError, TypeError):
    """A parameter of a public function has a wrong type or value."""


class InvalidInputError(MedauditError, ValueError):
    """Input data (a file, a column, a score array) cannot be used as given."""


PARAM_TEMPLATE = "The {name!r} parameter of {func} must be {expected}. Got {got!r} instead."


def param_error(name: str, func: str, expected: str, got: object) -> InvalidParameterError:
    """Build an :class:`InvalidParameterError` with the project's one message template.

    Examples
    --------
    >>> str(param_error("epsilon", "make_private", "a float in (0, inf)", -1))
    "The 'epsilon' parameter of make_private must be a float in (0, inf). Got -1 instead."
    """
    return InvalidParameterError(
        PARAM_TEMPLATE.format(name=name, func=func, expected=expected, got=got)
    )
