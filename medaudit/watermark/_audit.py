"""The watermark audit's registration: verify a key's watermark in the audited model.

``medaudit audit --audits watermark --watermark-key KEY.json`` adds the ownership test
to a report; without a key the section says so (skipped). Not run by default: only the
owner of a key can ask for it.
"""

from __future__ import annotations

from pathlib import Path

from medaudit.registry import AuditContext, AuditSpec, register_audit
from medaudit.report import Section, Setting
from medaudit.watermark._key import load_key
from medaudit.watermark._query import as_scorer
from medaudit.watermark._section import CHECKS, watermark_section
from medaudit.watermark._verify import verify_watermark

__all__ = ["SETTINGS", "SPEC", "audit"]

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "key",
        None,
        "Watermark key file written by `medaudit watermark embed` (the audit is skipped "
        "without one).",
        "path",
        flag="--watermark-key",
    ),
    Setting(
        "kind",
        "key",
        "Which test: the key's own kind ('key'), 'trigger' or 'harmless'.",
        "str",
        choices=("key", "trigger", "harmless"),
    ),
    Setting(
        "queries",
        0,
        "Trigger images to query (0: all the key defines).",
        "int",
        minimum=0,
    ),
)


def audit(ctx: AuditContext) -> Section:
    """Test whether the audited model carries the key's watermark (black-box queries)."""
    path = ctx.setting("watermark.key")
    if path is None:
        return watermark_section(None, policy=ctx.policy)
    key = load_key(Path(path))
    kind = ctx.setting("watermark.kind")
    queries = int(ctx.setting("watermark.queries")) or None
    info = ctx.model_info
    scorer = as_scorer(
        ctx.model,
        image_size=info.get("image_size"),
        in_channels=info.get("in_channels"),
        mean=info.get("mean"),
        std=info.get("std"),
        batch_size=ctx.batch_size,
        device=ctx.device,
    )
    n_classes = len(info.get("class_names") or []) or None
    scorer.num_classes = n_classes
    rate = ctx.policy.threshold("watermark.p_value").threshold
    v = verify_watermark(
        scorer, key, kind=None if kind == "key" else kind, false_claim_rate=rate, queries=queries
    )
    return watermark_section(v, policy=ctx.policy)


SPEC = register_audit(
    AuditSpec(
        name="watermark",
        title="ownership: is the key's watermark in the model (black-box hypothesis test)",
        audit=audit,
        checks=CHECKS,
        settings=SETTINGS,
        needs=("model",),
        default=False,
    )
)
