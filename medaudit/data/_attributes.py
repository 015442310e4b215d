"""One rule for sensitive attributes, used by every entry point.

Given no list, the sensitive attributes are the demographic columns present in the data
(:data:`DEMOGRAPHIC_COLUMNS`, matched ignoring case, spaces and hyphens: ``Sex`` and
``Age Group`` count). A list given by the user must name existing columns; an empty list
means "none". Every entry point (``medaudit audit``, ``medaudit check``, the pytest
plugin, the Python API, the shortcut audit) resolves attributes with
:func:`resolve_sensitive`, so the default and the error message are the same everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from medaudit._errors import InvalidInputError

__all__ = [
    "DEMOGRAPHIC_COLUMNS",
    "MSG_MISSING_ATTRIBUTES",
    "MSG_NO_ATTRIBUTES",
    "require_sensitive",
    "resolve_sensitive",
]

# Attribute columns audited when the user names none.
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = (
    "sex",
    "gender",
    "age_group",
    "race",
    "ethnicity",
    "insurance",
)
MSG_MISSING_ATTRIBUTES = (
    "Sensitive attribute column(s) {missing} not found in {source}; its columns are: {available}."
)
MSG_NO_ATTRIBUTES = (
    "No sensitive attribute to audit in {source}: none of the demographic columns ({demo}) "
    "is present. Name attribute columns with --sensitive (its columns are: {available})."
)


def _normalise(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def resolve_sensitive(
    columns: Iterable[object],
    requested: Sequence[str] | str | None = None,
    *,
    source: str = "the data",
) -> list[str]:
    """The sensitive attribute columns to audit.

    Parameters
    ----------
    columns : iterable
        The data's column names.
    requested : sequence of str, str or None
        The user's list (a comma-separated string is split). None: the demographic
        columns present; an empty list: none.
    source : str
        Names the data in the error message.

    Returns
    -------
    list of str
        Column names as they appear in the data.

    Raises
    ------
    InvalidInputError
        When a requested column does not exist (one message naming every missing one and
        the existing columns).

    Examples
    --------
    >>> resolve_sensitive(["label", "Sex", "age_group", "site"])
    ['Sex', 'age_group']
    >>> resolve_sensitive(["label", "sex"], "sex")
    ['sex']
    >>> resolve_sensitive(["label", "sex"], [])
    []
    """
    cols = [str(c) for c in columns]
    if isinstance(requested, str):
        requested = [r.strip() for r in requested.split(",") if r.strip()]
    if requested is None:
        by_norm = {_normalise(c): c for c in cols}
        return [by_norm[d] for d in DEMOGRAPHIC_COLUMNS if d in by_norm]
    missing = [r for r in requested if r not in cols]
    if missing:
        raise InvalidInputError(
            MSG_MISSING_ATTRIBUTES.format(
                missing=", ".join(missing), source=source, available=", ".join(cols)
            )
        )
    return list(dict.fromkeys(requested))


def require_sensitive(
    columns: Iterable[object],
    requested: Sequence[str] | str | None = None,
    *,
    source: str = "the data",
) -> list[str]:
    """:func:`resolve_sensitive`, raising :data:`MSG_NO_ATTRIBUTES` when it finds none.

    For entry points that audit nothing without an attribute (``medaudit check``, the
    pytest plugin).
    """
    cols = [str(c) for c in columns]
    out = resolve_sensitive(cols, requested, source=source)
    if not out:
        raise InvalidInputError(
            MSG_NO_ATTRIBUTES.format(
                source=source, demo=", ".join(DEMOGRAPHIC_COLUMNS), available=", ".join(cols)
            )
        )
    return out
