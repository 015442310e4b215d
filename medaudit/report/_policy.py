"""Policy: thresholds for checks and settings, overridable by a TOML file.

Each audit declares its own checks (id or fnmatch pattern → :class:`Threshold`) and its
own settings (:class:`Setting`) when it registers (see :mod:`medaudit.registry`); this
module holds only the statistical settings every audit shares. A policy file looks like::

    [settings]
    min_group_size = 30      # smaller groups are skipped, with the reason
    min_class_count = 5      # fewer positives or negatives than this: skipped
    n_bootstrap = 1000
    confidence = 0.95
    seed = 0
    decision = "ci"          # fail only when the CI lies beyond the threshold;
                             # "estimate": decide on the point estimate
    operating_point = "fixed"   # or "youden" / "sensitivity", chosen on the calibration split
    operating_threshold = 0.5   # predicted positive: score >= this (operating_point = "fixed")
    target_sensitivity = 0.9    # operating_point = "sensitivity"

    [settings.robustness]    # one table per audit for the audit's own settings
    severity = 3

    [checks."performance.auroc"]
    op = ">="
    threshold = 0.80

    [checks."fairness.*.auroc_gap"]   # fnmatch patterns are allowed
    op = "<="
    threshold = 0.05
    severity = "minor"                # critical, major (default), minor or info

An exact id beats any pattern; a pattern from the policy file beats a built-in pattern;
among patterns from the same place, the longest wins. ``medaudit policy show`` prints
every registered audit's keys with their help.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medaudit._errors import InvalidInputError, param_error
from medaudit.report._model import SEVERITIES, SEVERITY_ALIASES, Check

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CORE_SETTINGS", "SEVERITY_ALIASES", "Policy", "Setting", "Threshold"]

_VALID_OPS = ("<=", "<", ">=", ">")

MSG_UNKNOWN_SETTING = "unknown setting {name!r} (known: {known})"
MSG_UNKNOWN_CHECK = "check {cid!r} matches no check any registered audit declares (known: {known})"


@dataclass(frozen=True)
class Threshold:
    """How one check is judged: ``value op threshold`` passes.

    Parameters
    ----------
    op : {"<=", "<", ">=", ">"}
    threshold : float
    severity : {"critical", "major", "minor", "info"}, default "major"
        How serious a failure is; critical and major failures fail the report.
    help : str
        One line saying what the check measures (``medaudit policy show``).
    """

    op: str
    threshold: float
    severity: str = "major"
    help: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.op not in _VALID_OPS:
            raise param_error("op", "Threshold", f"one of {_VALID_OPS}", self.op)
        sev = SEVERITY_ALIASES.get(self.severity, self.severity)
        if sev not in SEVERITIES:
            raise param_error("severity", "Threshold", f"one of {SEVERITIES}", self.severity)
        object.__setattr__(self, "severity", sev)


@dataclass(frozen=True)
class Setting:
    """One setting an audit declares: name, default, validation and one line of help.

    Parameters
    ----------
    name : str
        Key within the audit's table (``"corruptions"``); the full id is
        ``"<audit>.<name>"`` (core settings have no audit prefix).
    default : object
        The value when neither the policy file nor the command line sets it.
    help : str
        One line for ``medaudit policy show`` and ``medaudit audit --help``.
    kind : {"int", "float", "str", "bool", "list", "path"}
        Type of the value; ``list`` is a list of strings (comma-separated on the command
        line); ``path`` a file path (``None`` allowed).
    choices : tuple, optional
        Allowed values (for ``list``: allowed items).
    minimum, maximum : float, optional
        Bounds (inclusive) for numbers.
    flag : str, optional
        Command-line flag of ``medaudit audit`` that sets it (``"--corruptions"``).
    check : callable, optional
        ``check(value) -> str | None``: an extra rule; returns what is wrong.
    """

    name: str
    default: Any
    help: str
    kind: str = "str"
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    flag: str | None = None
    check: Callable[[Any], str | None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        kinds = ("int", "float", "str", "bool", "list", "path")
        if self.kind not in kinds:
            raise param_error("kind", "Setting", f"one of {kinds}", self.kind)
        if self.flag is not None and not self.flag.startswith("--"):
            raise param_error("flag", "Setting", "a string starting with '--'", self.flag)

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this setting (None when it is valid)."""
        k = self.kind
        if value is None and (k == "path" or self.default is None):
            return None
        ok_type = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "str": isinstance(value, str),
            "bool": isinstance(value, bool),
            "list": isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value),
            "path": isinstance(value, (str, os.PathLike)),
        }[k]
        if not ok_type:
            what = {"list": "a list of strings", "path": "a file path"}.get(k, f"a {k}")
            return f"must be {what}, got {value!r}"
        items = list(value) if k == "list" else [value]
        if self.choices is not None:
            bad = [v for v in items if v not in self.choices]
            if bad:
                return f"must be one of {list(self.choices)}, got {bad[0]!r}"
        if k in ("int", "float"):
            if self.minimum is not None and value < self.minimum:
                return f"must be >= {self.minimum:g}, got {value!r}"
            if self.maximum is not None and value > self.maximum:
                return f"must be <= {self.maximum:g}, got {value!r}"
        return self.check(value) if self.check is not None else None

    def parse(self, text: str) -> Any:
        """The value of a command-line string (``"a,b"`` for lists, ``"true"`` for bools)."""
        k = self.kind
        try:
            if k == "int":
                return int(text)
            if k == "float":
                return float(text)
        except ValueError:
            raise InvalidInputError(
                f"{self.flag or self.name} must be a{'n' if k == 'int' else ''} {k}, got {text!r}."
            ) from None
        if k == "bool":
            low = text.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise InvalidInputError(f"{self.flag or self.name} must be true or false.")
            return low in ("true", "1", "yes")
        if k == "list":
            return [v.strip() for v in text.split(",") if v.strip()]
        return text


# The statistical settings every audit shares (no audit prefix).
CORE_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "min_group_size",
        30,
        "Groups with fewer images are skipped, with the reason.",
        "int",
        minimum=1,
    ),
    Setting(
        "min_class_count",
        5,
        "Groups with fewer positives or negatives than this are skipped.",
        "int",
        minimum=1,
    ),
    Setting("n_bootstrap", 1000, "Bootstrap resamples behind every CI.", "int", minimum=1),
    Setting(
        "confidence",
        0.95,
        "Confidence level of every interval.",
        "float",
        check=lambda v: None if 0 < v < 1 else f"must be in (0, 1), got {v!r}",
    ),
    Setting("seed", 0, "Seed of every resampling and random choice.", "int", minimum=0),
    Setting(
        "decision",
        "ci",
        "How a check is decided: 'ci' fails only when the CI lies beyond the threshold "
        "(inconclusive when it straddles it); 'estimate' decides on the point estimate.",
        "str",
        choices=("ci", "estimate"),
    ),
    Setting(
        "operating_point",
        "fixed",
        "How the operating threshold is chosen: 'fixed' (operating_threshold), 'youden' "
        "(Youden's J) or 'sensitivity' (the highest threshold reaching target_sensitivity), "
        "the latter two on the calibration split.",
        "str",
        choices=("fixed", "youden", "sensitivity"),
    ),
    Setting(
        "operating_threshold",
        0.5,
        "Score at or above which an image is called positive (operating_point = 'fixed').",
        "float",
        minimum=0.0,
        maximum=1.0,
    ),
    Setting(
        "target_sensitivity",
        0.9,
        "Sensitivity the operating point must reach (operating_point = 'sensitivity').",
        "float",
        check=lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {v!r}",
    ),
)


def _declared() -> tuple[dict[str, Setting], dict[str, Threshold]]:
    """Every registered audit's settings (full ids) and checks, plus the core settings."""
    from medaudit.registry import declared_checks, known_settings

    return known_settings(), declared_checks()


def _default_checks() -> dict[str, Threshold]:
    return dict(_declared()[1])


@dataclass(frozen=True)
class Policy:
    """Thresholds per check id (or fnmatch pattern) and settings.

    ``Policy()`` is the built-in policy: the thresholds and settings every registered
    audit declares. A policy file only needs to name what it changes.
    """

    checks: Mapping[str, Threshold] = field(default_factory=_default_checks)
    settings: Mapping[str, Any] = field(default_factory=dict)
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
        declared_settings, declared_checks = _declared()
        problems: list[str] = []
        unknown = set(doc) - {"settings", "checks"}
        if unknown:
            problems.append(f"unknown top-level table(s) {sorted(unknown)}")
        values = _flatten_settings(dict(doc.get("settings", {})))
        problems += _settings_problems(values, declared_settings)
        checks: dict[str, Threshold] = dict(declared_checks)
        for cid, spec in dict(doc.get("checks", {})).items():
            t, errs = _parse_check(cid, spec, declared_checks)
            problems += errs
            if t is not None:
                checks[cid] = t
        if problems:
            raise InvalidInputError(f"Invalid policy ({source}): " + "; ".join(problems) + ".")
        user_keys = frozenset(dict(doc.get("checks", {})))
        return cls(checks=checks, settings=values, source=source, overrides=user_keys)

    def with_settings(self, values: Mapping[str, Any], *, source: str | None = None) -> Policy:
        """A copy with some settings replaced (e.g. from command-line flags), validated."""
        declared_settings, _ = _declared()
        merged = {**self.settings, **values}
        problems = _settings_problems(dict(values), declared_settings)
        if problems:
            raise InvalidInputError("Invalid setting: " + "; ".join(problems) + ".")
        return dataclasses.replace(self, settings=merged, source=source or self.source)

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

        With ``decision = "ci"`` (the default) a check fails only when its CI lies
        beyond the threshold and is ``inconclusive`` when the CI straddles it; with
        ``decision = "estimate"`` the point estimate decides. The severity comes from
        the policy.

        Examples
        --------
        >>> p = Policy.from_mapping({"settings": {"decision": "estimate"}})
        >>> p.judge("performance.auroc", "AUROC", 0.72, ci=(0.60, 0.84)).status
        'fail'
        >>> Policy.default().judge("performance.auroc", "AUROC", 0.72, ci=(0.60, 0.84)).status
        'inconclusive'
        """
        t = self.threshold(check_id, default)
        return Check.evaluate(
            check_id,
            description,
            value,
            op=t.op,
            threshold=t.threshold,
            ci=ci,
            severity=t.severity,  # type: ignore[arg-type]
            advice=advice,
            decision=self.setting("decision"),
        )

    def skipped(self, check_id: str, description: str, reason: str) -> Check:
        """A skipped check carrying the severity the policy gives ``check_id``."""
        try:
            sev = self.threshold(check_id).severity
        except KeyError:
            sev = "major"
        return Check.skipped(check_id, description, reason, severity=sev)  # type: ignore[arg-type]

    def setting(self, name: str) -> Any:
        """One setting: core (``"n_bootstrap"``) or an audit's (``"robustness.severity"``)."""
        if name in self.settings:
            return self.settings[name]
        declared, _ = _declared()
        if name not in declared:
            raise InvalidInputError(
                MSG_UNKNOWN_SETTING.format(name=name, known=", ".join(sorted(declared)))
            )
        return declared[name].default

    @property
    def sha256(self) -> str:
        """SHA-256 of the policy's TOML text: identifies exactly which policy was used."""
        return hashlib.sha256(self.to_toml(comments=False).encode("utf-8")).hexdigest()

    def to_toml(self, *, comments: bool = True) -> str:
        """The policy as TOML text (what ``medaudit policy show`` prints)."""
        declared, _ = _declared()
        lines = [f"# medaudit policy — source: {self.source}"] if comments else []
        by_audit: dict[str, list[str]] = {}
        for full in declared:
            audit, _, _key = full.rpartition(".")
            by_audit.setdefault(audit, []).append(full)
        for audit in sorted(by_audit, key=lambda a: (a != "", a)):
            lines.append("[settings]" if not audit else f"\n[settings.{audit}]")
            for full in by_audit[audit]:
                s = declared[full]
                if comments:
                    lines.append(f"# {s.help}")
                v = self.setting(full)
                key = full.rpartition(".")[2]
                lines.append(f"{key} = {_toml_value(v)}" if v is not None else f"# {key} = (unset)")
        for cid, t in sorted(self.checks.items()):
            lines += ["", f'[checks."{cid}"]']
            if comments and t.help:
                lines.append(f"# {t.help}")
            lines += [f'op = "{t.op}"', f"threshold = {t.threshold!r}"]
            lines.append(f'severity = "{t.severity}"')
        return "\n".join(lines) + "\n"


def _flatten_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``{"n_bootstrap": 10, "robustness": {"severity": 3}}`` → full ids."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, Mapping):
            for k2, v2 in v.items():
                out[f"{k}.{k2}"] = v2
        else:
            out[str(k)] = v
    return out


def _settings_problems(values: Mapping[str, Any], declared: Mapping[str, Setting]) -> list[str]:
    problems = []
    for name, v in values.items():
        if name not in declared:
            problems.append(
                MSG_UNKNOWN_SETTING.format(name=name, known=", ".join(sorted(declared)))
            )
            continue
        why = declared[name].problem(v)
        if why:
            problems.append(f"setting {name!r} {why}")
    return problems


def _parse_check(
    cid: str, spec: Any, declared: Mapping[str, Threshold]
) -> tuple[Threshold | None, list[str]]:
    if not isinstance(spec, Mapping):
        return None, [f"check {cid!r} must be a table with op and threshold"]
    problems = []
    if not _could_match(cid, declared):
        problems.append(MSG_UNKNOWN_CHECK.format(cid=cid, known=", ".join(sorted(declared))))
    op, thr = spec.get("op"), spec.get("threshold")
    sev = SEVERITY_ALIASES.get(spec.get("severity", "major"), spec.get("severity", "major"))
    extra = set(spec) - {"op", "threshold", "severity"}
    if extra:
        problems.append(f"check {cid!r}: unknown key(s) {sorted(extra)}")
    if op not in _VALID_OPS:
        problems.append(f"check {cid!r}: op must be one of {_VALID_OPS}, got {op!r}")
    if not isinstance(thr, (int, float)) or isinstance(thr, bool):
        problems.append(f"check {cid!r}: threshold must be a number, got {thr!r}")
    if sev not in SEVERITIES:
        problems.append(f"check {cid!r}: severity must be one of {SEVERITIES}, got {sev!r}")
    if problems:
        return None, problems
    base = declared.get(cid)
    return Threshold(op, float(thr), sev, help=base.help if base else ""), []  # type: ignore[arg-type]


def _could_match(cid: str, declared: Mapping[str, Threshold]) -> bool:
    """Whether a policy key names a check some audit declares.

    An exact id must match a declared id or pattern; a pattern must at least start with
    a registered audit's name (``"fairness.sex.*"``, ``"*.auroc_gap"``).
    """
    if not any(ch in cid for ch in "*?["):
        return any(fnmatch.fnmatchcase(cid, d) for d in declared)
    audits = {d.split(".", 1)[0] for d in declared}
    head = cid.split(".", 1)[0]
    return any(fnmatch.fnmatchcase(a, head) for a in audits)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, os.PathLike):
        return f'"{os.fspath(v)}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)
