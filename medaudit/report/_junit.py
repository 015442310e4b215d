"""Checks as a JUnit XML report, the format every CI system can display."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from medaudit.report._model import Check

__all__ = ["checks_to_junit"]


def _num(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _statement(c: Check) -> str:
    text = f"{c.description}: value {_num(c.value)}"
    if c.ci is not None:
        text += f" (CI {_num(c.ci[0])} to {_num(c.ci[1])})"
    if c.op is not None and c.threshold is not None:
        text += f"; required {c.op} {_num(c.threshold)}"
    if c.reason:
        text += f"; {c.reason}"
    return text


def checks_to_junit(checks: Sequence[Check], suite_name: str = "medaudit") -> str:
    """Render ``checks`` as JUnit XML: one test case per check.

    A failure of critical or major severity becomes a ``<failure>``, ``skipped`` a
    ``<skipped>`` with the reason, and a minor/info failure or an inconclusive check a
    passing case whose ``<system-out>`` starts with ``WARNING`` (or ``INCONCLUSIVE``). All
    text is XML-escaped.

    Parameters
    ----------
    checks : sequence of Check
    suite_name : str
        Name of the ``<testsuite>`` (and the test cases' ``classname``).

    Returns
    -------
    str
        The XML document.

    Examples
    --------
    >>> xml = checks_to_junit([Check.evaluate("a.b", "gap", 0.1, op="<=", threshold=0.05)])
    >>> 'failures="1"' in xml and '<failure message="gap: value 0.1; required &lt;= 0.05"' in xml
    True
    """
    failures = sum(c.blocking for c in checks)
    skipped = sum(c.status == "skipped" for c in checks)
    root = ET.Element(
        "testsuites",
        name=suite_name,
        tests=str(len(checks)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name=suite_name,
        tests=str(len(checks)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
    )
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=suite_name, name=c.id)
        statement = _statement(c)
        if c.blocking:
            fail = ET.SubElement(case, "failure", message=statement, type="CheckFailed")
            fail.text = statement + (f"\nAdvice: {c.advice}" if c.advice else "")
        elif c.status == "skipped":
            ET.SubElement(case, "skipped", message=c.reason)
        out = ET.SubElement(case, "system-out")
        out.text = (
            {"fail": "WARNING: ", "inconclusive": "INCONCLUSIVE: "}.get(
                c.status if not c.blocking else "", ""
            )
            + statement
            + (f"\nAdvice: {c.advice}" if c.advice and c.status != "pass" else "")
        )
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
