"""The integrity audit's registration: ``audit(ctx)`` and its declared checks."""

from __future__ import annotations

from medaudit.integrity._section import CHECKS, integrity_section
from medaudit.registry import AuditContext, AuditSpec, register_audit
from medaudit.report import Section

__all__ = ["SPEC", "audit"]


def audit(ctx: AuditContext) -> Section:
    """Audit the data itself: unreadable files, duplicates, leakage, labels, missing values."""
    return integrity_section(ctx.cohort, train=ctx.train, policy=ctx.policy)


SPEC = register_audit(
    AuditSpec(
        name="integrity",
        title="the data itself: unreadable or duplicate images, patient leakage, labels",
        audit=audit,
        checks=CHECKS,
    )
)
