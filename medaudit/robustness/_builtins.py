"""The built-in corruptions, registered on import in the order reports list them."""

# isort: off
from medaudit.robustness import _noise, _blur, _intensity, _digital, _acquisition, _colour
# isort: on

__all__ = ["FAMILY_MODULES"]

FAMILY_MODULES = (_noise, _blur, _intensity, _digital, _acquisition, _colour)
