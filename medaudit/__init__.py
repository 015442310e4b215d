"""medaudit: audit medical imaging models for privacy, fairness and robustness."""

from medaudit._errors import InvalidInputError, InvalidParameterError, MedauditError

__version__ = "0.1.0"

__all__ = ["InvalidInputError", "InvalidParameterError", "MedauditError", "__version__"]
