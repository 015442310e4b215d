"""The ``medaudit`` pytest plugin (entry point ``pytest11``).

Fixtures, configured in the project's ``pyproject.toml``::

    [tool.medaudit]
    predictions = "preds.csv"     # label, score / score_<class>, attribute columns
    # or: model = "model.safetensors" and data = "manifest.csv" (inference runs once)
    policy = "policy.toml"        # optional
    sensitive = ["sex", "age_group"]
    label_column = "y_true"       # optional column mapping, as the CLI flags:
    score_column = "prob"         # score_columns, patient_column, path_column,
    positive_label = "yes"        # uncertain_label, uncertain_policy

- ``medaudit_config``: the ``[tool.medaudit]`` table (paths resolved against the
  folder of ``pyproject.toml``);
- ``medaudit_predictions``: a :class:`medaudit.inference.Predictions`, loaded once per
  session (``--medaudit-predictions PATH`` overrides the file);
- ``medaudit_policy``: the :class:`medaudit.report.Policy`;
- ``medaudit_sensitive``: the list of attribute columns.

This module is imported by every pytest run where medaudit is installed, so it imports
nothing heavy at module level and never fails at import.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MSG_NOT_CONFIGURED = (
    "medaudit: no predictions configured. Add to pyproject.toml:\n"
    '[tool.medaudit]\npredictions = "preds.csv"\n'
    '(or model = "model.safetensors" and data = "manifest.csv"), '
    "or pass --medaudit-predictions PATH."
)
PATH_KEYS = ("predictions", "model", "data", "policy")


def pytest_addoption(parser: Any) -> None:
    """Add ``--medaudit-predictions``."""
    group = parser.getgroup("medaudit", "medaudit fairness fixtures")
    group.addoption(
        "--medaudit-predictions",
        action="store",
        default=None,
        metavar="PATH",
        help="Predictions CSV/Parquet for the medaudit_predictions fixture "
        "(overrides [tool.medaudit] predictions).",
    )


def read_tool_config(config: Any) -> dict[str, Any]:
    """The ``[tool.medaudit]`` table of the run's ``pyproject.toml``, paths made absolute."""
    inipath = getattr(config, "inipath", None)
    if inipath is not None and Path(inipath).name == "pyproject.toml":
        pyproject = Path(inipath)
    else:
        pyproject = Path(config.rootpath) / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    try:
        doc = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise pytest.UsageError(f"medaudit: cannot read {pyproject}: {exc}") from None
    table = dict(doc.get("tool", {}).get("medaudit", {}))
    base = pyproject.parent
    for k in PATH_KEYS:
        if isinstance(table.get(k), str):
            table[k] = str((base / table[k]).resolve())
    return table


@pytest.fixture(scope="session")
def medaudit_config(pytestconfig: Any) -> dict[str, Any]:
    """The ``[tool.medaudit]`` table of ``pyproject.toml`` (paths absolute)."""
    return read_tool_config(pytestconfig)


@pytest.fixture(scope="session")
def medaudit_predictions(pytestconfig: Any, medaudit_config: dict[str, Any]) -> Any:
    """Predictions named in ``[tool.medaudit]`` (a file, or a model run over data)."""
    from medaudit._errors import MedauditError
    from medaudit.data import ColumnMap

    path = pytestconfig.getoption("medaudit_predictions") or medaudit_config.get("predictions")
    try:
        if path:
            from medaudit.fairness._io import read_predictions

            return read_predictions(path, columns=ColumnMap.from_config(medaudit_config))
        if medaudit_config.get("model") and medaudit_config.get("data"):
            from medaudit.data import load_cohort
            from medaudit.inference import predict
            from medaudit.models import load_checkpoint

            loaded = load_checkpoint(medaudit_config["model"], arch=medaudit_config.get("arch"))
            cohort = load_cohort(
                medaudit_config["data"], columns=ColumnMap.from_config(medaudit_config)
            )
            return predict(
                loaded.model,
                cohort,
                image_size=loaded.image_size,
                in_channels=loaded.in_channels,
                mean=loaded.mean,
                std=loaded.std,
            )
    except (MedauditError, OSError) as exc:
        pytest.fail(f"medaudit: {exc}", pytrace=False)
    pytest.fail(MSG_NOT_CONFIGURED, pytrace=False)


@pytest.fixture(scope="session")
def medaudit_policy(medaudit_config: dict[str, Any]) -> Any:
    """The policy named in ``[tool.medaudit] policy``, else the built-in one."""
    from medaudit._errors import MedauditError
    from medaudit.report import Policy

    if not medaudit_config.get("policy"):
        return Policy.default()
    try:
        return Policy.from_toml(medaudit_config["policy"])
    except MedauditError as exc:
        pytest.fail(f"medaudit: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def medaudit_sensitive(medaudit_config: dict[str, Any], medaudit_predictions: Any) -> list[str]:
    """``[tool.medaudit] sensitive``, else the demographic columns present."""
    from medaudit._errors import MedauditError
    from medaudit.data import require_sensitive

    names = medaudit_config.get("sensitive")
    try:
        return require_sensitive(
            medaudit_predictions.meta.columns,
            None if names is None else [str(n) for n in names],
            source="the [tool.medaudit] predictions",
        )
    except MedauditError as exc:
        pytest.fail(f"medaudit: {exc}", pytrace=False)
