"""Red-team attacks on trained models: membership, unlearning, reconstruction.

Families: membership inference (``attacks.membership``), unlearning with verification
(``attacks.unlearning``, which builds on the membership signals) and gradient inversion
(``attacks.reconstruction``).

Each attack family is a subpackage with its own registry and audit; this package only
groups them and re-exports nothing, so importing it imports no family.
"""

__all__: list[str] = []
