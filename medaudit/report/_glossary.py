"""Words of the trade, explained: the glossary and the hover definitions of the page.

Each term is wrapped, at its first use in a piece of text, in ``<abbr title="...">``, so a
reader hovering over it (or focusing it) sees one sentence; the glossary at the end of the
page lists them all. Column names are turned into words (``true_positive_rate`` →
``sensitivity (TPR)``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from markupsafe import Markup, escape

__all__ = ["COLUMN_LABELS", "GLOSSARY", "column_label", "gloss"]

GLOSSARY: dict[str, str] = {
    "AUROC": "Area under the ROC curve: the chance that the model scores a random diseased "
    "image above a random healthy one (0.5 is guessing, 1 is perfect).",
    "sensitivity": "Share of diseased images the model flags (true positive rate, TPR).",
    "specificity": "Share of healthy images the model clears (true negative rate).",
    "FNR": "False negative rate: share of diseased images the model misses (1 - sensitivity).",
    "FPR": "False positive rate: share of healthy images the model flags (1 - specificity).",
    "TPR": "True positive rate, the same as sensitivity.",
    "PPV": "Positive predictive value: share of flagged images that are diseased.",
    "NPV": "Negative predictive value: share of cleared images that are healthy.",
    "ECE": "Expected calibration error: the average gap between predicted probability and "
    "observed disease rate, over equal-width probability bins weighted by their size.",
    "calibration": "Whether a predicted probability of 0.3 means that 30% of such images "
    "are diseased.",
    "operating point": "The score at or above which an image is called positive; "
    "sensitivity and specificity depend on it.",
    "Youden": "Youden's J = sensitivity + specificity - 1; the threshold maximising it "
    "balances the two.",
    "equalized odds": "Equal true and false positive rates in every group; its difference is "
    "the larger of the two gaps.",
    "demographic parity": "Equal shares of images flagged in every group, whatever the "
    "disease prevalence.",
    "equity-scaled": "Equity-scaled AUROC: AUROC divided by one plus the groups' total "
    "distance from it (FairCLIP); lower when groups differ.",
    "underdiagnosis": "A patient with a finding called 'no finding' (the false negative rate "
    "of a finding).",
    "selection rate": "Share of images the model flags.",
    "Holm": "Holm's step-down correction: keeps the chance of any false alarm in a family "
    "of tests at the nominal level.",
    "Benjamini-Hochberg": "A correction that keeps the expected share of false alarms among "
    "the flagged tests at the nominal level.",
    "permutation": "A p-value from shuffling the group labels many times: how often a gap "
    "this large arises when groups do not matter.",
    "bootstrap": "Resampling patients with replacement many times to see how much a number "
    "would vary in another sample of the same kind.",
    "CI": "Confidence interval: the range of values the data are compatible with (95% unless "
    "stated).",
    "p-value": "The chance of a gap at least this large if the groups truly did not differ.",
    "Simpson": "Simpson's paradox: a gap pooled over sites that disappears or reverses "
    "within every site, because the groups come from different sites.",
    "levelling down": "Reaching equal error rates by making the better-served group worse "
    "off instead of helping the worse-served one.",
    "inconclusive": "Status of a check whose CI includes the threshold: the data cannot tell "
    "whether it passes.",
    "severity": "How serious a failure of a check would be, set by the policy: critical and "
    "major failures fail the report, minor and info failures do not.",
    "Brier": "Brier score: mean squared difference between predicted probability and outcome.",
    "intersection": "Patients defined by two attributes at once (e.g. women aged 60-79).",
}

COLUMN_LABELS: dict[str, str] = {
    "auroc": "AUROC",
    "true_positive_rate": "sensitivity (TPR)",
    "true_negative_rate": "specificity",
    "false_negative_rate": "FNR",
    "false_positive_rate": "FPR",
    "ppv": "PPV",
    "npv": "NPV",
    "ece": "ECE",
    "n": "n",
    "n_pos": "n diseased",
    "n_neg": "n healthy",
    "n_positive": "n diseased",
    "brier_score": "Brier score",
    "selection_rate": "selection rate",
    "underdiagnosis_rate": "underdiagnosis rate",
    "balanced_accuracy": "balanced accuracy",
    "p_value": "p",
    "p_value_unadjusted": "p (unadjusted)",
    "p_adjusted": "p (adjusted)",
    "ci_low": "CI low",
    "ci_high": "CI high",
    "tpr_before": "sensitivity before",
    "tpr_after": "sensitivity after",
    "fpr_before": "FPR before",
    "fpr_after": "FPR after",
    "selection_rate_before": "selection rate before",
    "selection_rate_after": "selection rate after",
    "tpr": "sensitivity (TPR)",
    "fpr": "FPR",
    "share_of_site": "share of the site's images",
    "levelling_down": "levels down",
}


def column_label(name: str) -> str:
    """A column name in words.

    Examples
    --------
    >>> column_label("true_positive_rate"), column_label("group_high")
    ('sensitivity (TPR)', 'group high')
    """
    return COLUMN_LABELS.get(name, str(name).replace("_", " "))


@lru_cache(maxsize=1)
def _pattern() -> re.Pattern[str]:
    terms = sorted(GLOSSARY, key=len, reverse=True)
    alts = "|".join(re.escape(t) for t in terms)
    return re.compile(rf"(?<![\w-])({alts})(?![\w-])", re.IGNORECASE)


def _lookup(word: str) -> str | None:
    if word in GLOSSARY:
        return word
    low = word.lower()
    for t in GLOSSARY:
        # Acronyms must match in capitals ("CI" is not "ci" in "specific"); words in any case.
        if t.lower() == low and not t.isupper():
            return t
    return None


def gloss(text: object) -> Markup:
    """Escape ``text`` and wrap the first use of each glossary term in ``<abbr title>``.

    Examples
    --------
    >>> str(gloss("AUROC <b> and AUROC again"))
    '<abbr class="term" title="Area under the ROC curve: the chance that the model scores a random diseased image above a random healthy one (0.5 is guessing, 1 is perfect).">AUROC</abbr> &lt;b&gt; and AUROC again'
    """  # noqa: E501
    escaped = str(escape("" if text is None else str(text)))
    seen: set[str] = set()

    def sub(m: re.Match[str]) -> str:
        term = _lookup(m.group(1))
        if term is None or term in seen:
            return m.group(0)
        seen.add(term)
        title = escape(GLOSSARY[term])
        return f'<abbr class="term" title="{title}">{m.group(1)}</abbr>'

    # Terms are letters, spaces and hyphens only, so they never match inside an entity.
    return Markup(_pattern().sub(sub, escaped))
