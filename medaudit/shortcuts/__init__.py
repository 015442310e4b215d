"""Shortcut audit: does the model read the site, a marker or the patient, not the disease.

Four questions per attribute (any categorical column: ``site``, ``sex``, a marker flag):
*encoded* (a linear probe on the frozen penultimate features, against a metadata control
and within strata of a confounder), *used* (aligned vs conflicting images, class-wise score
shift, and a counterfactual swap of a marker's region), *where* (captum occlusion maps
aggregated per class and attribute level) and *does the gap survive* (test-set matching of
prevalence and age, KS tests of feature modes). Disentanglement trains the attribute out
with adversaries behind a gradient-reversal layer, through the one training loop's hooks.
"""

from medaudit.shortcuts._attributes import CodedAttribute, code_attribute
from medaudit.shortcuts._audit import CHECKS, SETTINGS, SPEC, audit, audit_shortcuts
from medaudit.shortcuts._clustered import (
    ClusteredEstimate,
    auroc_estimate,
    balanced_accuracy_estimate,
    macro_auroc_estimate,
    mean_estimate,
    stratified_auroc_estimate,
)
from medaudit.shortcuts._disentangle import (
    Disentangler,
    DisentangleResult,
    dann_lambda,
    disentangle_hooks,
    grad_reverse,
    train_disentangled,
)
from medaudit.shortcuts._features import (
    MSG_NO_PENULTIMATE,
    MSG_UNKNOWN_LAYER,
    FeatureTap,
    find_penultimate_layer,
    predict_with_features,
)
from medaudit.shortcuts._matching import MatchedGaps, ks_tests, matched_gaps, matching_weights
from medaudit.shortcuts._occlusion import OcclusionMaps, occlusion_maps, summarise_map
from medaudit.shortcuts._probe import ProbeResult, attribute_probe, patient_folds
from medaudit.shortcuts._usage import (
    AlignmentResult,
    CounterfactualResult,
    Region,
    aligned_conflicting,
    counterfactual_swap,
    estimate_region,
    parse_region,
)

__all__ = [
    "CHECKS",
    "MSG_NO_PENULTIMATE",
    "MSG_UNKNOWN_LAYER",
    "SETTINGS",
    "SPEC",
    "AlignmentResult",
    "ClusteredEstimate",
    "CodedAttribute",
    "CounterfactualResult",
    "DisentangleResult",
    "Disentangler",
    "FeatureTap",
    "MatchedGaps",
    "OcclusionMaps",
    "ProbeResult",
    "Region",
    "aligned_conflicting",
    "attribute_probe",
    "audit",
    "audit_shortcuts",
    "auroc_estimate",
    "balanced_accuracy_estimate",
    "code_attribute",
    "counterfactual_swap",
    "dann_lambda",
    "disentangle_hooks",
    "estimate_region",
    "find_penultimate_layer",
    "grad_reverse",
    "ks_tests",
    "macro_auroc_estimate",
    "matched_gaps",
    "matching_weights",
    "mean_estimate",
    "occlusion_maps",
    "parse_region",
    "patient_folds",
    "predict_with_features",
    "stratified_auroc_estimate",
    "summarise_map",
    "train_disentangled",
]
