"""Operating thresholds chosen on a calibration split (moved to :mod:`medaudit.operating_point`).

The performance and the fairness audits share one operating point, so its code lives
below both; this module keeps the fairness package's public names.
"""

from medaudit.operating_point import sensitivity_threshold, youden_threshold

__all__ = ["sensitivity_threshold", "youden_threshold"]
