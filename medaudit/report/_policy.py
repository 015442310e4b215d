"""Policy: thresholds for checks and statistical settings, overridable by a TOML file.

A policy file looks like::

    [settings]
    min_group_size = 30      # smaller groups are skipped, with the reason
    min_class_count = 5      # fewer positives or negatives than this: skipped
    n_bootstrap = 1000
    confidence = 0.95
    seed = 0
    decision = "estimate"    # or "ci": fail only when the CI excludes the threshold

    [checks."performance.auroc"]
    op = ">="
    threshold = 0.80

    [checks."fairness.*.auroc_gap"]   # fnmatch patterns are allowed
    op = "<="
    threshold = 0.05
    severity = "warn"                # "fail" (default) or "warn"

An exact id beats any pattern; a pattern from the policy file beats a built-in pattern;
among patterns from the same place, the longest wins.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medaudit._errors import InvalidInputError
from medaudit.report._model import Check

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["BUILTIN_CHECKS", "DEFAULT_SETTINGS", "Policy", "Threshold"]

DEFAULT_SETTINGS: dict[str, Any] = {
    "min_group_size": 30,
    "min_class_count": 5,
    "n_bootstrap": 1000,
    "confidence": 0.95,
    "seed": 0,
    "decision": "estimate",
}
_DECISIONS = ("estimate", "ci")

_VALID_OPS = ("<=", "<", ">=", ">")
_VALID_SEVERITIES = ("fail", "warn")


@dataclass(frozen=True)
class Threshold:
    """How one check is judged: ``value op threshold`` passes; else ``severity``."""

    op: str
    threshold: float
    severity: str = "fail"


# Built-in thresholds, one line per check (or pattern of checks). A policy file overrides
# them one by one; `medaudit policy show` prints the merged result.
BUILTIN_CHECKS: dict[str, Threshold] = {
    "performance.auroc": Threshold(">=", 0.75),
    "performance.ece": Threshold("<=", 0.10, "warn"),
    "performance.site_auroc_gap": Threshold("<=", 0.10, "warn"),
    "integrity.unreadable_files": Threshold("<=", 0.0, "warn"),
    "integrity.duplicate_images": Threshold("<=", 0.0, "warn"),
    "integrity.patient_overlap": Threshold("<=", 0.0),
    "integrity.invalid_labels": Threshold("<=", 0.0),
    "integrity.missing_attributes": Threshold("<=", 0.0, "warn"),
    "fairness.*.auroc_gap": Threshold("<=", 0.05),
    "fairness.*.worst_group_auroc": Threshold(">=", 0.70, "warn"),
    "fairness.*.underdiagnosis_gap": Threshold("<=", 0.05, "warn"),
    "fairness.*.equalized_odds_difference": Threshold("<=", 0.10, "warn"),
    "fairness.*.demographic_parity_difference": Threshold("<=", 0.10, "warn"),
    "fairness.*.ece_gap": Threshold("<=", 0.05, "warn"),
    "fairness.*.error_abs_pearson_r": Threshold("<=", 0.10, "warn"),
}


@dataclass(frozen=True)
class Policy:
    """Thresholds per check id (or fnmatch pattern) and statistical settings.

    Audits call :meth:`threshold` with their built-in default; a policy file only
    needs to name what it changes.
    """

    checks: Mapping[str, Threshold] = field(default_factory=lambda: dict(BUILTIN_CHECKS))
    settings: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_SETTINGS))
    source: str = "built-in defaults"
    overrides: frozenset[str] = frozenset()

    @classmethod
    def default(cls) -> Policy:
        """The built-in policy."""
        return cls()

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Policy:
        """Read a policy file; every problem in it is reported at once."""
        p = Path(path)
        if not p.is_file():
            raise InvalidInputError(f"Policy file not found: {p}")
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"Policy file {p} is not valid TOML: {exc}") from None
        return cls.from_mapping(doc, source=str(p))

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], *, source: str = "mapping") -> Policy:
        """Build a policy from the parsed TOML document."""
        problems: list[str] = []
        unknown = set(doc) - {"settings", "checks"}
        if unknown:
            problems.append(f"unknown top-level table(s) {sorted(unknown)}")
        settings = dict(DEFAULT_SETTINGS)
        for k, v in dict(doc.get("settings", {})).items():
            if k not in DEFAULT_SETTINGS:
                problems.append(f"unknown setting {k!r} (known: {sorted(DEFAULT_SETTINGS)})")
                continue
            settings[k] = v
        for k in ("min_group_size", "min_class_count", "n_bootstrap"):
            v = settings[k]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                problems.append(f"setting {k!r} must be a positive integer, got {v!r}")
        conf = settings["confidence"]
        if not isinstance(conf, (int, float)) or not 0 < conf < 1:
            problems.append(f"setting 'confidence' must be in (0, 1), got {conf!r}")
        if settings["decision"] not in _DECISIONS:
            problems.append(
                f"setting 'decision' must be one of {_DECISIONS}, got {settings['decision']!r}"
            )
        checks: dict[str, Threshold] = dict(BUILTIN_CHECKS)
        for cid, spec in dict(doc.get("checks", {})).items():
            if not isinstance(spec, Mapping):
                problems.append(f"check {cid!r} must be a table with op and threshold")
                continue
            op = spec.get("op")
            thr = spec.get("threshold")
            sev = spec.get("severity", "fail")
            extra = set(spec) - {"op", "threshold", "severity"}
            if extra:
                problems.append(f"check {cid!r}: unknown key(s) {sorted(extra)}")
            if op not in _VALID_OPS:
                problems.append(f"check {cid!r}: op must be one of {_VALID_OPS}, got {op!r}")
            if not isinstance(thr, (int, float)) or isinstance(thr, bool):
                problems.append(f"check {cid!r}: threshold must be a number, got {thr!r}")
            if sev not in _VALID_SEVERITIES:
                problems.append(
                    f"check {cid!r}: severity must be one of {_VALID_SEVERITIES}, got {sev!r}"
                )
            if op in _VALID_OPS and isinstance(thr, (int, float)) and sev in _VALID_SEVERITIES:
                checks[cid] = Threshold(op, float(thr), sev)
        if problems:
            raise InvalidInputError(f"Invalid policy ({source}): " + "; ".join(problems) + ".")
        user_keys = frozenset(dict(doc.get("checks", {})))
        return cls(checks=checks, settings=settings, source=source, overrides=user_keys)

    def threshold(self, check_id: str, default: Threshold | None = None) -> Threshold:
        """The threshold for ``check_id``: the policy's most specific match, else ``default``."""
        if check_id in self.checks:
            return self.checks[check_id]
        matches = [p for p in self.checks if fnmatch.fnmatchcase(check_id, p)]
        # A pattern from the policy file beats a built-in one; then the longest wins.
        user = [p for p in matches if p in self.overrides]
        if user or matches:
            return self.checks[max(user or matches, key=len)]
        if default is None:
            raise KeyError(f"No threshold for check {check_id!r} in policy {self.source}")
        return default

    def judge(
        self,
        check_id: str,
        description: str,
        value: float,
        *,
        ci: tuple[float, float] | None = None,
        advice: str = "",
        default: Threshold | None = None,
    ) -> Check:
        """Build the check ``check_id`` from its value and CI under this policy.

        With ``decision = "estimate"`` (the default) a check fails on its point estimate,
        and says whether its CI excludes the threshold. With ``decision = "ci"`` a point
        estimate beyond the threshold whose CI still includes the threshold is a warning,
        not a failure: it fails only when the evidence excludes the threshold. That keeps
        small test sets, where max-min gaps are biased upwards, from failing on noise.

        Examples
        --------
        >>> p = Policy.from_mapping({"settings": {"decision": "ci"}})
        >>> p.judge("performance.auroc", "AUROC", 0.72, ci=(0.60, 0.84)).status
        'warn'
        >>> Policy.default().judge("performance.auroc", "AUROC", 0.72, ci=(0.60, 0.84)).status
        'fail'
        """
        t = self.threshold(check_id, default)
        check = Check.evaluate(
            check_id,
            description,
            value,
            op=t.op,
            threshold=t.threshold,
            ci=ci,
            severity=t.severity,  # type: ignore[arg-type]
            advice=advice,
        )
        if (
            self.setting("decision") == "ci"
            and check.status == "fail"
            and check.ci_excludes_threshold is False
        ):
            pct = f"{float(self.setting('confidence')) * 100:g}%"
            check = dataclasses.replace(
                check,
                status="warn",
                reason=f"beyond the threshold, but its {pct} CI includes it "
                '(policy decision = "ci": fails only when the CI excludes the threshold)',
            )
        return check

    def setting(self, name: str) -> Any:
        """One statistical setting (``min_group_size``, ``n_bootstrap``, ...)."""
        return self.settings.get(name, DEFAULT_SETTINGS[name])

    def to_toml(self) -> str:
        """The policy as TOML text (what ``medaudit policy show`` prints)."""
        lines = [f"# medaudit policy — source: {self.source}", "[settings]"]
        for k in DEFAULT_SETTINGS:
            lines.append(f"{k} = {_toml_value(self.setting(k))}")
        for cid, t in sorted(self.checks.items()):
            lines += ["", f'[checks."{cid}"]', f'op = "{t.op}"', f"threshold = {t.threshold!r}"]
            if t.severity != "fail":
                lines.append(f'severity = "{t.severity}"')
        return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)
