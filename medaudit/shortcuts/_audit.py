"""The shortcut audit's registration, its checks and settings, and its Python entry point."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from medaudit.registry import AuditContext, AuditSpec, register_audit
from medaudit.report import Policy, Section, Setting, Threshold
from medaudit.shortcuts._examine import ShortcutSettings, examine
from medaudit.shortcuts._probe import PROBES
from medaudit.shortcuts._section import shortcut_section
from medaudit.shortcuts._usage import region_problem

__all__ = ["CHECKS", "SETTINGS", "SPEC", "audit", "audit_shortcuts"]

CHECKS: dict[str, Threshold] = {
    "shortcuts.*.encoded": Threshold(
        "<=",
        0.60,
        "info",
        help="Probe AUROC of the attribute from the frozen penultimate features "
        "(above the threshold: encoded; informational, a model may see it without using it)",
    ),
    "shortcuts.*.used": Threshold(
        "<=",
        0.60,
        "major",
        help="Within each class, how often an image whose attribute points towards the "
        "disease outscores one whose attribute points away (smaller of the two classes; "
        "0.5 = not used)",
    ),
}

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "attributes",
        [],
        "Columns examined for shortcuts (default: site plus the sensitive attributes).",
        "list",
        flag="--shortcut-attributes",
    ),
    Setting(
        "marker_region",
        "auto",
        "Region of an image-level marker swapped in the counterfactual test: x0,y0,x1,y1 in "
        "fractions of the image, 'auto' (estimated per site) or 'none'.",
        "str",
        flag="--marker-region",
        check=region_problem,
    ),
    Setting(
        "compare_to",
        None,
        "Baseline checkpoint: show task AUROC, probe AUROCs and subgroup gaps before/after.",
        "path",
        flag="--compare-to",
    ),
    Setting("probe", "ridge", "Linear probe: 'ridge' or 'logistic'.", "str", choices=PROBES),
    Setting(
        "folds",
        5,
        "Patient-grouped cross-validation folds of the probes.",
        "int",
        minimum=2,
        maximum=20,
    ),
    Setting(
        "probe_resamples",
        50,
        "Patient bootstrap resamples behind the probes' CIs (each refits every fold).",
        "int",
        minimum=2,
        maximum=2000,
    ),
    Setting(
        "control_columns",
        [],
        "Metadata columns of the control (default: site, the sensitive attributes, age, "
        "the label).",
        "list",
    ),
    Setting(
        "stratify_by",
        "site",
        "Confounder whose strata the probes are also evaluated within.",
        "str",
    ),
    Setting(
        "match_on",
        ["age"],
        "Columns matched across groups (with the label) before comparing their performance.",
        "list",
    ),
    Setting(
        "n_modes",
        4,
        "Principal feature modes compared between groups (KS tests).",
        "int",
        minimum=1,
        maximum=32,
    ),
    Setting(
        "p_adjust",
        "holm",
        "Multiple-testing correction of the KS tests.",
        "str",
        choices=("holm", "bh", "none"),
    ),
    Setting(
        "occlusion_images",
        24,
        "Images (class-balanced) behind the occlusion maps; 0 switches them off.",
        "int",
        minimum=0,
    ),
    Setting("occlusion_grid", 4, "Occlusion windows per image side.", "int", minimum=2, maximum=16),
    Setting(
        "border_band",
        0.125,
        "Width of the border band, as a fraction of the side.",
        "float",
        minimum=0.01,
        maximum=0.45,
    ),
    Setting(
        "per_image_maps",
        0,
        "Per-image occlusion maps to show (they show patients: off by default).",
        "int",
        minimum=0,
        maximum=25,
    ),
    Setting(
        "counterfactual_images",
        128,
        "Images whose marker region is swapped; 0 switches the swap off.",
        "int",
        minimum=0,
    ),
    Setting(
        "decision_threshold",
        0.5,
        "Score at or above which an image is called "
        "positive (balanced accuracy, flipped decisions).",
        "float",
        minimum=0.0,
        maximum=1.0,
    ),
    Setting("max_levels", 10, "Attributes with more values are not examined.", "int", minimum=2),
)


def audit(ctx: AuditContext) -> Section:
    """Is the model encoding, using, and looking at a shortcut? (see :mod:`medaudit.shortcuts`)."""
    cfg = ShortcutSettings.from_context(ctx)
    return shortcut_section(_examine_quietly(ctx, cfg), policy=ctx.policy)


def _examine_quietly(ctx: AuditContext, cfg: ShortcutSettings) -> Any:
    """:func:`examine` with BLAS on one thread.

    Every matrix here is small (features of at most a few thousand images); a
    multi-threaded BLAS spends longer waking and spinning its threads than computing, and
    on a busy machine an SVD of 1,000 x 64 then takes seconds instead of milliseconds.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return examine(ctx, cfg)


def audit_shortcuts(
    model: Any,
    cohort: Any,
    *,
    attributes: Sequence[str] | str | None = None,
    feature_layer: str | None = None,
    train: Any = None,
    policy: Policy | None = None,
    image_size: int | None = None,
    in_channels: int | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    compare_to: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> Section:
    """Run the shortcut audit on any ``nn.Module`` from Python.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits. A zoo model gives its features directly; for any
        other module the penultimate features are read by a forward hook (the input of the
        final linear layer, or the output of ``feature_layer``).
    cohort : Cohort
        The audited images and metadata.
    attributes : sequence of str or comma-separated str, optional
        Columns to examine (default: ``site`` plus the demographic columns present).
    feature_layer : str, optional
        Name of the layer whose output are the features (``"avgpool"``); needed when the
        penultimate layer cannot be found (the error lists the candidates).
    train : Cohort, optional
        The training cohort: directions of association and held-out sites come from it.
    policy : Policy, optional
        Thresholds and settings (``shortcuts.*``).
    image_size, in_channels : int, optional
    mean, std : float or sequence of float, optional
        The model's input normalisation.
    compare_to : path, optional
        Baseline checkpoint for the before/after table.
    batch_size : int
    device : str

    Returns
    -------
    Section

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from medaudit.data import generate_hospitals
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> c = generate_hospitals(n_sites=2, patients_per_site=20, image_size=32, seed=0)
    >>> sec = audit_shortcuts(net, c, attributes="site",
    ...                       policy=Policy.from_mapping({"settings": {"shortcuts": {
    ...                           "occlusion_images": 0, "counterfactual_images": 0}}}))
    >>> [c.id for c in sec.checks]
    ['shortcuts.site.encoded', 'shortcuts.site.used']
    >>> audit_shortcuts(nn.Sequential(nn.Flatten(), nn.Linear(1024, 2), nn.Linear(2, 2)), c)
    Traceback (most recent call last):
    ...
    medaudit._errors.InvalidInputError: Cannot find the penultimate layer of Sequential: \
several linear layers could produce the logits (1, 2). Name the layer whose output are the \
features with feature_layer="..." (e.g. feature_layer='1'); candidate layers, last first: \
2 (Linear), 1 (Linear), 0 (Flatten).
    """
    from medaudit.data import resolve_sensitive
    from medaudit.shortcuts._features import predict_with_features

    policy = policy or Policy.default()
    if attributes is not None:
        attrs = resolve_sensitive(cohort.meta.columns, attributes, source=f"cohort {cohort.name!r}")
        policy = policy.with_settings({"shortcuts.attributes": attrs})
    if compare_to is not None:
        policy = policy.with_settings({"shortcuts.compare_to": str(compare_to)})
    preds = predict_with_features(
        model,
        cohort,
        feature_layer=feature_layer,
        image_size=image_size,
        in_channels=in_channels,
        mean=mean,
        std=std,
        batch_size=batch_size,
        device=device,
    )
    ctx = AuditContext(
        predictions=preds,
        cohort=cohort,
        policy=policy,
        sensitive=resolve_sensitive(cohort.meta.columns, None),
        train=train,
        model=model,
        model_info={
            "image_size": image_size,
            "in_channels": in_channels,
            "mean": None if mean is None else list(_as_list(mean)),
            "std": None if std is None else list(_as_list(std)),
        },
        batch_size=batch_size,
        device=device,
    )
    found = _examine_quietly(ctx, ShortcutSettings.from_context(ctx))
    return shortcut_section(found, policy=policy)


def _as_list(v: Sequence[float] | float) -> list[float]:
    return [float(v)] if isinstance(v, (int, float)) else [float(x) for x in v]


SPEC = register_audit(
    AuditSpec(
        name="shortcuts",
        title="is the model reading the site, a marker or the patient instead of the disease?",
        audit=audit,
        checks=CHECKS,
        settings=SETTINGS,
        needs=("model", "features"),
    )
)
