"""The fairness audit's registration: ``audit(ctx)``, its checks and its settings."""

from __future__ import annotations

from medaudit.fairness._continuous import PEARSON_THRESHOLD
from medaudit.fairness._section import CHECK_KINDS, fairness_section
from medaudit.operating_point import operating_point_from_policy
from medaudit.registry import AuditContext, AuditSpec, register_audit
from medaudit.report import Section, Setting, Threshold

__all__ = ["CHECKS", "SETTINGS", "SPEC", "audit"]

CHECKS: dict[str, Threshold] = {
    f"fairness.*.{suffix}": Threshold(t.op, t.threshold, t.severity, help=words)
    for suffix, (_m, _k, t, words, _a) in CHECK_KINDS.items()
}
CHECKS["fairness.*.error_abs_pearson_r"] = Threshold(
    PEARSON_THRESHOLD.op,
    PEARSON_THRESHOLD.threshold,
    PEARSON_THRESHOLD.severity,
    help="|Pearson r| between a continuous attribute (age) and the absolute error",
)

SETTINGS: tuple[Setting, ...] = (
    Setting("intersections", True, "Also audit each pair of attributes crossed.", "bool"),
    Setting(
        "p_method",
        "bootstrap",
        "Gap p-values: 'bootstrap' (the test dual to the gap's simultaneous CI) or "
        "'permutation' (group labels permuted among patients).",
        "str",
        choices=("bootstrap", "permutation", "none"),
    ),
    Setting(
        "n_permutations",
        1000,
        "Permutations behind each gap's p-value (p_method = 'permutation'; at least, raised "
        "to 200 per primary test so that an adjusted p-value below 0.01 can be reached).",
        "int",
        minimum=1,
    ),
    Setting(
        "p_adjust",
        "holm",
        "Multiple-testing correction of the gap p-values.",
        "str",
        choices=("holm", "bh", "none"),
    ),
    Setting(
        "continuous",
        ["age"],
        "Continuous attributes correlated (Pearson r) with the score and the error.",
        "list",
    ),
)

NO_ATTRIBUTE_SUMMARY = "No sensitive attribute was given or found, so no subgroup was compared."


def audit(ctx: AuditContext) -> Section:
    """Subgroup performance, gaps with CIs and p-values, and a mitigation suggestion."""
    if not ctx.sensitive:
        from medaudit.data import DEMOGRAPHIC_COLUMNS

        return Section(
            name="fairness",
            title="Fairness across patient groups",
            summary=NO_ATTRIBUTE_SUMMARY,
            notes=[
                "Name attribute columns with --sensitive (e.g. --sensitive sex,age_group); "
                f"by default medaudit looks for {', '.join(DEMOGRAPHIC_COLUMNS)}."
            ],
        )
    cont = ctx.setting("fairness.continuous")
    op = None
    if ctx.predictions.is_binary:
        op = operating_point_from_policy(ctx.predictions, ctx.policy, ctx.calibration)
    return fairness_section(
        ctx.predictions,
        sensitive=ctx.sensitive,
        policy=ctx.policy,
        intersections=bool(ctx.setting("fairness.intersections")),
        operating_point=op,
        operating_threshold=float(ctx.setting("operating_threshold")),
        continuous=tuple(c for c in cont if c in ctx.predictions.meta.columns),
        calibration=ctx.calibration,
        p_adjust=ctx.setting("fairness.p_adjust"),
        n_permutations=int(ctx.setting("fairness.n_permutations")),
        p_method=ctx.setting("fairness.p_method"),
    )


SPEC = register_audit(
    AuditSpec(
        name="fairness",
        title="performance per patient group and intersection, gaps with CIs and p-values",
        audit=audit,
        checks=CHECKS,
        settings=SETTINGS,
    )
)
