"""The report section of a gradient-inversion attack; images only on request."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from medaudit.attacks.reconstruction._attack import ReconstructionResult
from medaudit.report import Check, Policy, Section, Threshold

__all__ = ["SSIM_THRESHOLD", "reconstruction_section"]

#: A defence holds when the reconstructions' mean SSIM stays below this (CI-wise).
SSIM_THRESHOLD = Threshold(
    "<",
    0.2,
    "major",
    help="Mean SSIM of gradient-inversion reconstructions against the clients' images.",
)

REFERENCES = [
    "Geiping J, Bauermeister H, Dröge H, Moeller M. Inverting gradients — how easy is it "
    "to break privacy in federated learning? NeurIPS 2020.",
    "Zhao B, Mopuri KR, Bilen H. iDLG: improved deep leakage from gradients. 2020.",
    "Wang Z, Bovik AC, Sheikh HR, Simoncelli EP. Image quality assessment: from error "
    "visibility to structural similarity. IEEE TIP 2004.",
]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _checks(result: ReconstructionResult, policy: Policy) -> list[Check]:
    out = []
    for r in result.table.itertuples(index=False):
        ci = None if np.isnan(r.ssim_low) else (float(r.ssim_low), float(r.ssim_high))
        out.append(
            policy.judge(
                f"reconstruction.{_slug(str(r.defence))}.ssim",
                f"Reconstructions from updates under '{r.defence}' stay unrecognisable (mean SSIM)",
                float(r.mean_ssim),
                ci=ci,
                default=SSIM_THRESHOLD,
                advice="Share updates of larger batches, or train with DP-SGD.",
            )
        )
    return out


def _figure(result: ReconstructionResult) -> Any:
    import matplotlib.pyplot as plt

    names = list(result.images)
    fig, axes = plt.subplots(len(names), 2, figsize=(3.2, 1.6 * len(names)), squeeze=False)
    for ax_row, name in zip(axes, names, strict=True):
        orig, rec = result.images[name]
        for ax, img, what in ((ax_row[0], orig[0], "original"), (ax_row[1], rec[0], "attack")):
            ax.imshow(img.mean(axis=0), cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
            ax.set_title(f"{name}: {what}", fontsize=7)
    return fig


def reconstruction_section(
    result: ReconstructionResult,
    *,
    policy: Policy | None = None,
    show_images: bool = False,
) -> Section:
    """Section ``reconstruction``: SSIM/PSNR per defence and which defences held.

    Parameters
    ----------
    result : ReconstructionResult
    policy : Policy, optional
        Thresholds (check ids ``reconstruction.<defence>.ssim``; default ``< 0.2``).
    show_images : bool, default False
        Add a figure of one original and its reconstruction per defence. These are
        patients' images: off unless asked for.

    Returns
    -------
    Section
    """
    pol = policy or Policy.default()
    checks = _checks(result, pol)
    held = [c.id.split(".")[1] for c in checks if c.status == "pass"]
    broken = [c.id.split(".")[1] for c in checks if c.status == "fail"]
    names = {_slug(str(n)): str(n) for n in result.table["defence"]}
    summary = (
        f"Gradient inversion recovered recognisable images under "
        f"{', '.join(names[b] for b in broken) or 'no defence'}; "
        f"the defences that held: {', '.join(names[h] for h in held) or 'none'}. "
        f"Reconstructions that point at their patient among "
        f"{int(result.table['reid_candidates'].max())} cohort images: "
        + ", ".join(
            f"{r.defence} {r.reidentified:.0%}" for r in result.table.itertuples(index=False)
        )
        + f" (chance {float(result.table['reid_chance'].max()):.1%})."
    )
    figures = {"reconstructions": _figure(result)} if show_images else {}
    return Section(
        name="reconstruction",
        title="Reconstruction from shared gradients",
        summary=summary,
        tables={"defences": result.table.copy()},
        table_titles={"defences": "Gradient inversion per defence (SSIM, PSNR, re-identification)"},
        figures=figures,
        checks=checks,
        notes=[
            "A defence held when the whole 95% CI of the mean SSIM (over attacked clients) "
            f"lies below {SSIM_THRESHOLD.threshold}; inconclusive when it straddles it.",
            "Baseline: the SSIM of the cohort's mean image against the same originals "
            f"(mean {float(result.table['baseline_ssim'].mean()):.2f} here). Images that share "
            "a template (radiographs) score a high SSIM without any individual detail, so a "
            "reconstruction recovers something individual only where it beats this baseline "
            "and its PSNR.",
            "Re-identified: the share of attacked images whose reconstruction is more "
            "similar (SSIM) to that image than to each of up to "
            f"{int(result.table['reid_candidates'].max()) - 1} other images of the cohort "
            "that no attacked client held (chance: reid_chance). It asks whether the "
            "reconstruction points at the patient, which SSIM against a shared template "
            "does not; another image of the same patient among the others counts against it.",
            "Reconstructions are matched to the originals by the assignment maximising SSIM "
            "(the order of a batch is not revealed by its gradient).",
            "Images are shown only with show_images=True (--show-images): they are "
            "patients' images."
            if not show_images
            else "Images are shown because they were asked for: they are patients' images.",
        ],
        references=list(REFERENCES),
        methods=(
            "Inverting Gradients: cosine gradient matching over every parameter with a "
            "total-variation prior, signed Adam, labels from the last layer's gradient; "
            "clients' updates simulated with the one training loop (SGD)."
        ),
    )
