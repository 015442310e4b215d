"""The robustness audit's registration: ``audit(ctx)``, its checks and its settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medaudit._errors import InvalidInputError
from medaudit.registry import AuditContext, AuditSpec, register_audit
from medaudit.report import Section, Setting, Threshold
from medaudit.robustness._presets import SweepPlan, check_items, plan_sweep
from medaudit.robustness._registry import SEVERITIES
from medaudit.robustness._section import SweepInputs, robustness_section
from medaudit.robustness._sweep import CorruptionTransform, run_cells

if TYPE_CHECKING:
    from medaudit.data import Cohort

__all__ = ["CHECKS", "SETTINGS", "SPEC", "audit"]

CHECKS: dict[str, Threshold] = {
    "robustness.*.auroc_drop": Threshold(
        "<=",
        0.05,
        "major",
        help="AUROC lost under a corruption at the policy's severity (clean minus corrupted).",
    ),
    "robustness.mce": Threshold(
        "<=",
        1.5,
        "minor",
        help="Mean corruption error: balanced error under corruption over the reference's "
        "(the clean model's own without --reference-model).",
    ),
}

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "corruptions",
        ["core"],
        "Corruptions to sweep, comma-separated: presets (core, chest, ct, mri, fundus, "
        "derm, path, all), families (noise, blur, intensity, digital, acquisition, colour) "
        "and/or corruption names.",
        "list",
        flag="--corruptions",
        check=check_items,
    ),
    Setting(
        "severity",
        3,
        "Severity (1-5) at which the AUROC-drop checks and the subgroup table are judged.",
        "int",
        choices=SEVERITIES,
        flag="--corruption-severity",
    ),
    Setting(
        "reference_model",
        None,
        "Checkpoint of a reference model for CE / relative CE (default: the audited model's "
        "own clean error).",
        "path",
        flag="--reference-model",
    ),
    Setting(
        "operating_threshold",
        0.5,
        "Score at or above which a binary model calls an image positive (balanced error).",
        "float",
        minimum=0.0,
        maximum=1.0,
    ),
    Setting(
        "show_images",
        "auto",
        "The strip of one image at every severity: 'auto' (synthetic data only), 'always' "
        "or 'never'. Patient images appear only when asked for.",
        "str",
        choices=("auto", "always", "never"),
    ),
)

# Columns that only medaudit's synthetic hospitals carry (their planted ground truth).
SYNTHETIC_COLUMNS: tuple[str, ...] = ("lesion_contrast", "acq_noise")
MAX_STRIP_ROWS = 12
# Decoded clean images up to this size are kept in memory for the sweep, so that files are
# read once rather than once per cell; larger cohorts are streamed from disk every time.
MEMORY_BUDGET_BYTES = 256 * 2**20
MSG_REFERENCE_CHANNELS = (
    "The reference model reads {ref} channel(s) but the audited model {model}; "
    "CE needs both models on the same corrupted images."
)


@dataclass(frozen=True)
class _Reader:
    """How a model reads the cohort (size, channels, normalisation)."""

    model: Any
    image_size: int | None
    in_channels: int | None
    mean: Any
    std: Any

    def predict_kwargs(self, ctx: AuditContext) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            "mean": self.mean,
            "std": self.std,
            "batch_size": ctx.batch_size,
            "device": ctx.device,
            "features": False,
        }


def _channels(native: int, in_channels: int | None) -> int:
    """Channels a corruption sees: grayscale stays grayscale whatever the model reads."""
    if native == 1 or in_channels == 1:
        return 1
    return int(in_channels or native)


def _reference(ctx: AuditContext, path: Any, channels: int, native: int) -> _Reader | None:
    if path is None:
        return None
    lm = ctx.load_model(path)
    ref_channels = _channels(native, lm.in_channels)
    if ref_channels != channels:
        raise InvalidInputError(MSG_REFERENCE_CHANNELS.format(ref=ref_channels, model=channels))
    return _Reader(lm.model, lm.image_size, lm.in_channels, lm.mean, lm.std)


def _reference_passes(
    ctx: AuditContext, ref: _Reader, plan: SweepPlan, seed: int, native: int, cohort: Cohort
) -> tuple[np.ndarray, dict[tuple[str, int], np.ndarray]]:
    from medaudit.inference import predict

    kw = ref.predict_kwargs(ctx)
    clean = predict(ref.model, cohort, **kw).scores
    cells = run_cells(
        plan,
        lambda t, _key: predict(ref.model, cohort, transform=t, **kw).scores,
        seed=seed,
        native_channels=native,
    )
    return clean, cells


def _in_memory(ctx: AuditContext) -> tuple[Cohort, str | None]:
    """The cohort the cells read: disk images decoded once when they fit the budget.

    The clean images are kept at the model's input size (never the corrupted ones); a
    cohort already in memory, or too large, is returned as it is.
    """
    from medaudit.data import Cohort

    cohort = ctx.cohort
    if cohort.images is not None:
        return cohort, None
    c, h, w = cohort.image_shape
    size = ctx.model_info.get("image_size")
    nbytes = len(cohort) * c * (size or h) * (size or w) * 4
    if nbytes > MEMORY_BUDGET_BYTES:
        return cohort, None
    images = cohort.load_all(image_size=size)
    meta = cohort.meta.drop(columns=["path"])
    kept = Cohort(meta, images=images, class_names=cohort.class_names, name=cohort.name)
    return kept, (
        f"The clean images were decoded once and kept in memory ({nbytes / 2**20:.0f} MB) "
        "for the sweep; corrupted images never are."
    )


def _is_synthetic(ctx: AuditContext) -> bool:
    return all(c in ctx.cohort.meta.columns for c in SYNTHETIC_COLUMNS)


def _strip(ctx: AuditContext, plan: SweepPlan, seed: int, native: int) -> dict[str, list[Any]]:
    """One image (the first diseased one) clean and at every severity, as the model sees it."""
    from medaudit.data import iter_batches

    labels = ctx.cohort.labels
    row = int(np.flatnonzero(labels > 0)[0]) if (labels > 0).any() else 0
    info = ctx.model_info
    _, x = next(
        iter_batches(
            ctx.cohort,
            1,
            indices=[row],
            image_size=info.get("image_size"),
            channels=info.get("in_channels"),
        )
    )
    idx = np.array([row])
    out: dict[str, list[Any]] = {}
    for p in plan.corruptions[:MAX_STRIP_ROWS]:
        imgs = [x[0].numpy()]
        for sev in SEVERITIES:
            t = CorruptionTransform(p.corruption, p.parameters[sev - 1], seed, native)
            imgs.append(t(x, idx)[0].numpy())
        out[p.name] = imgs
    return out


def audit(ctx: AuditContext) -> Section:
    """Sweep corruptions × severities through the model; report drops, mCE and who loses."""
    from medaudit._progress import progress_bar

    ctx.require("robustness", "model")
    seed = int(ctx.setting("seed"))
    native = int(ctx.cohort.image_shape[0])
    channels = _channels(native, ctx.model_info.get("in_channels"))
    plan = plan_sweep(list(ctx.setting("robustness.corruptions")), channels=channels)
    ref = _reference(ctx, ctx.setting("robustness.reference_model"), channels, native)
    n_cells = len(plan.corruptions) * len(SEVERITIES)
    source, memory_note = _in_memory(ctx)
    with progress_bar("Corruption sweep", total=n_cells, enabled=ctx.progress) as advance:
        cells = run_cells(
            plan,
            lambda t, key: ctx.predict_transformed(t, key=key, cohort=source).scores,
            seed=seed,
            native_channels=native,
            on_cell=lambda: advance(1),
        )
    reference = (
        None
        if ref is None
        else _reference_passes(
            ctx,
            ref,
            plan,
            seed,
            native,
            source if ref.image_size == ctx.model_info.get("image_size") else ctx.cohort,
        )
    )
    show = ctx.setting("robustness.show_images")
    strip_wanted = show == "always" or (show == "auto" and _is_synthetic(ctx))
    notes = [memory_note] if memory_note else []
    if strip_wanted and len(plan.corruptions) > MAX_STRIP_ROWS:
        notes.append(f"The image strip shows the first {MAX_STRIP_ROWS} corruptions.")
    inputs = SweepInputs(
        labels=ctx.predictions.labels,
        clean=ctx.predictions.scores,
        cells=cells,
        plan=plan,
        meta=ctx.predictions.meta,
        sensitive=ctx.sensitive,
        reference=reference,
        strip=_strip(ctx, plan, seed, native) if strip_wanted else {},
        notes=notes,
    )
    return robustness_section(
        inputs,
        policy=ctx.policy,
        severity=int(ctx.setting("robustness.severity")),
        threshold=float(ctx.setting("robustness.operating_threshold")),
    )


SPEC = register_audit(
    AuditSpec(
        name="robustness",
        title="how much the model loses under corrupted images, and which patients lose most",
        audit=audit,
        checks=CHECKS,
        settings=SETTINGS,
        needs=("model",),
    )
)
