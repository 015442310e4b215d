"""The ``federated`` audit's registration: its checks, and the audit run on one machine.

``medaudit audit --audits federated`` computes, from the audited cohort's site column,
exactly what each site would send in a federated audit (confusion counts and score
histograms per group, then the clustered moments) and aggregates them as the server
does: the same section ``medaudit federate --audit-only`` writes, without Flower. It
shows what a federated audit of these sites would report, and that it matches the
pooled computation.
"""

from __future__ import annotations

from medaudit.federated._section import CHECKS, audit_section
from medaudit.federated._stats import (
    aggregate_moments,
    aggregate_statistics,
    cluster_moments,
    site_statistics,
)
from medaudit.registry import AuditContext, AuditSpec, register_audit
from medaudit.report import Section, Setting

__all__ = ["SETTINGS", "SPEC", "audit"]

SETTINGS: tuple[Setting, ...] = (
    Setting("site_column", "site", "Column naming each image's site.", "str"),
    Setting(
        "n_bins",
        65536,
        "Score histogram bins (logit scale) per group and class (at least 4096).",
        "int",
        minimum=4096,
    ),
)

NO_SITES = "The data has no site column {column!r}; the federated audit groups by site."


def audit(ctx: AuditContext) -> Section:
    """The federated audit of the clean predictions, one site per value of the site column."""
    column = str(ctx.setting("federated.site_column"))
    meta = ctx.predictions.meta
    title = "Federated audit across sites"
    why = ""
    if column not in meta.columns:
        why = NO_SITES.format(column=column)
    elif not ctx.predictions.is_binary:
        why = "The federated audit needs a binary model."
    if why:
        return Section(
            name="federated",
            title=title,
            summary=why,
            checks=[
                ctx.policy.skipped("federated.auroc", "Global AUROC from site statistics", why)
            ],
        )
    y, s = ctx.predictions.labels, ctx.predictions.score
    sites = meta[column].astype(str).to_numpy()
    groups = {a: meta[a].to_numpy() for a in ctx.sensitive if a in meta.columns}
    threshold = float(ctx.setting("operating_threshold"))
    n_bins = int(ctx.setting("federated.n_bins"))
    per_site = {}
    for name in sorted(set(sites.tolist())):
        m = sites == name
        per_site[name] = site_statistics(
            y[m],
            s[m],
            groups={a: v[m] for a, v in groups.items()},
            threshold=threshold,
            n_bins=n_bins,
        )
    pooled = aggregate_statistics(list(per_site.values()))
    clusters = meta["patient_id"].astype(str).to_numpy() if "patient_id" in meta.columns else None
    moments = aggregate_moments(
        [
            cluster_moments(
                y[m],
                s[m],
                groups={a: v[m] for a, v in groups.items()},
                clusters=None if clusters is None else clusters[m],
                pooled=pooled,
            )
            for m in (sites == name for name in per_site)
        ]
    )
    return audit_section(
        per_site,
        pooled,
        moments,
        policy=ctx.policy,
        notes=[
            f"Computed on one machine from the site column {column!r}: each site's counts "
            "and histograms, summed as a federated server sums them."
        ],
    )


SPEC = register_audit(
    AuditSpec(
        name="federated",
        title="metrics per patient group from per-site sufficient statistics (no pooling)",
        audit=audit,
        checks=CHECKS,
        settings=SETTINGS,
        default=False,
    )
)
