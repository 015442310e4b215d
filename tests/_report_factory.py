"""A realistic report for the report tests: sections, figures, every status, hostile strings.

Used by tests/test_report_*.py and tests/test_browser.py (not collected: no test_ prefix).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medaudit.report import Check, Figure, Report, Section  # noqa: E402

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'
EVIL = SCRIPT + IMG
PATIENT_IDS = [f"PAT-{i:05d}" for i in range(6)]
STUDY_IDS = [f"STU-{i:05d}" for i in range(6)]
IMAGE_PATHS = [f"images/site_{i % 2}/PAT-{i:05d}_frontal.png" for i in range(6)]


def _figure(groups: list[str]) -> Figure:
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for g in groups:
        fpr = np.sort(np.r_[0, rng.uniform(size=8), 1])
        tpr = np.sqrt(fpr)
        ax.plot(fpr, tpr, label=g)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title("ROC by group")
    ax.legend(loc="lower right", fontsize=7)
    return Figure.from_matplotlib(fig, alt=f"ROC curves per group, including {EVIL}")


def build_report(*, with_identifiers: bool = True) -> Report:
    """A report like the demo's: performance, fairness (with hostile group names), integrity."""
    perf = Section(
        name="performance",
        title="Performance",
        summary="The model separates diseased from healthy radiographs well (AUROC 0.91).",
        checks=[
            Check.evaluate(
                "performance.auroc",
                "Area under the ROC curve",
                0.912,
                op=">=",
                threshold=0.75,
                decision="estimate",
                ci=(0.884, 0.935),
            ),
            Check.evaluate(
                "performance.ece",
                "Expected calibration error",
                0.134,
                op="<=",
                threshold=0.10,
                decision="estimate",
                ci=(0.09, 0.17),
                severity="minor",
                advice="Recalibrate the scores (temperature scaling on a held-out site).",
            ),
        ],
        tables={
            "by_site": pd.DataFrame(
                {
                    "site": ["site_0", "site_1", "site_2"],
                    "n": [412, 388, 57],
                    "prevalence": [0.213, 0.186, 0.4035],
                    "auroc": [0.921, 0.905, 0.83],
                    "auroc_lo": [0.89, 0.87, 0.71],
                    "auroc_hi": [0.946, 0.934, 0.93],
                }
            )
        },
        figures={"roc_by_site": _figure(["site_0", "site_1", "site_2"])},
        methods="AUROC with a stratified patient-level bootstrap (1000 resamples).",
        references=["Hanley JA, McNeil BJ. Radiology 143(1):29-36, 1982."],
    )
    groups = ["female", "male", EVIL]
    fair_table = pd.DataFrame(
        {
            "group": groups,
            "n": [431, 398, 12],
            "auroc": [0.95, 0.87, float("nan")],
            "auroc_lo": [0.93, 0.84, float("nan")],
            "auroc_hi": [0.97, 0.90, float("nan")],
            f"note {SCRIPT}": ["", "", f"too small {IMG}"],
        }
    )
    fairness = Section(
        name="fairness",
        title=f"Fairness across sex {SCRIPT}",
        summary=f"The model is less accurate for men than for women; group {IMG} is too small.",
        checks=[
            Check.evaluate(
                "fairness.sex.auroc_gap",
                "AUROC gap between sexes",
                0.08,
                op="<=",
                threshold=0.05,
                decision="estimate",
                ci=(0.052, 0.118),
                advice="Collect more training images of men, or reweight the loss by sex.",
            ),
            Check.evaluate(
                "fairness.sex.underdiagnosis_gap",
                "Underdiagnosis (FNR) gap between sexes",
                0.061,
                op="<=",
                threshold=0.05,
                decision="estimate",
                ci=(-0.01, 0.13),
                advice="Review the operating threshold per group with clinicians.",
            ),
            Check.skipped(
                f"fairness.sex[{EVIL}].auroc",
                f"AUROC of group {EVIL}",
                "group too small: 12 images, fewer than 30",
            ),
        ],
        tables={"groups": fair_table},
        figures={"roc_by_sex": _figure(groups)},
        notes=[f"Group names come from the metadata, e.g. {EVIL}."],
        methods="Per-group AUROC with a bootstrap that resamples within each group and class.\n\n"
        "Gaps are the largest difference between groups, with the CI of the difference.",
        references=[
            "Seyyed-Kalantari L et al. Underdiagnosis bias of AI algorithms applied to chest "
            "radiographs in under-served patient populations. Nat Med 27, 2176-2182 (2021)."
        ],
    )
    integ_cols: dict[str, list[object]] = {}
    if with_identifiers:
        integ_cols = {
            "patient_id": PATIENT_IDS,
            "study_id": STUDY_IDS,
            "path": IMAGE_PATHS,
        }
    integ_cols |= {
        "duplicate_of": [f"sha256 of {p}" for p in IMAGE_PATHS],
        "site": [f"site_{i % 2}" for i in range(6)],
        "count": [1, 2, 3, 4, 5, 6],
    }
    integrity = Section(
        name="integrity",
        title="Data integrity",
        summary="Three patients appear in both the training and the test split.",
        checks=[
            Check.evaluate(
                "integrity.patient_overlap",
                "Patients in both training and test data",
                3,
                op="<=",
                threshold=0,
                decision="estimate",
                advice="Re-split by patient_id so that no patient is in both splits.",
            ),
            Check.evaluate(
                "integrity.unreadable_files", "Unreadable image files", 0, op="<=", threshold=0
            ),
        ],
        tables={"overlap": pd.DataFrame(integ_cols)},
        notes=[f"First duplicate found: {IMAGE_PATHS[0]}."],
    )
    empty = Section(name="privacy", title="Privacy", summary="Not run: no training data given.")
    return Report(
        sections=[perf, fairness, integrity, empty],
        meta={
            "title": "Audit of chest-x-ray classifier",
            "model": "resnet18 (synthetic hospitals)",
            "model_hash": "sha256:" + "ab12" * 16,
            "data_hash": "sha256:" + "cd34" * 16,
            "seed": 0,
            "command": ["medaudit", "audit", "--model", "m.safetensors", "--data", "manifest.csv"],
            "versions": {"medaudit": "0.1.0", "torch": "2.14.0", "numpy": "2.1.0"},
            "timings": {"inference_s": 3.25, "fairness_s": 1.5},
            "model_card": {
                "intended_use": "Triage of adult frontal chest radiographs; not for children.",
                "training_data": f"4 synthetic sites, 2,000 patients. Site named {SCRIPT}.",
                "sensitive_attributes": ["sex", "age_group"],
                "limitations": ["Synthetic data only.", f"Unknown behaviour on {IMG}."],
            },
        },
    )
