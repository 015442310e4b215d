"""Red-team attacks on trained models: membership inference (``attacks.membership``).

Each attack family is a subpackage with its own registry and audit; this package only
groups them and re-exports nothing, so importing one family never imports another.
"""

__all__: list[str] = []
