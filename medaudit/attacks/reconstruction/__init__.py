"""Gradient inversion (``medaudit attack reconstruct``): can a client's images be recovered.

Inverting Gradients (cosine gradient matching + total-variation prior, labels from the
last layer's gradient) against one client's simulated update or a batch gradient, with
PSNR and SSIM per image matched to the originals, under defences: batch size, local
steps, DP-SGD clipping and noise calibrated for a claimed epsilon.
"""

from medaudit.attacks.reconstruction._attack import ReconstructionResult, reconstruction_attack
from medaudit.attacks.reconstruction._gradients import (
    MSG_DP_LOCAL_STEPS,
    MSG_NO_GRADIENT_ACCESS,
    Defence,
    ObservedUpdate,
    batch_gradient,
    dp_defence,
    observe_update,
    trainable_parameters,
)
from medaudit.attacks.reconstruction._invert import (
    MSG_NO_LINEAR_HEAD,
    InversionSettings,
    Reconstruction,
    infer_labels,
    invert_gradients,
)
from medaudit.attacks.reconstruction._metrics import MatchedImages, match_images, psnr, ssim
from medaudit.attacks.reconstruction._section import SSIM_THRESHOLD, reconstruction_section

__all__ = [
    "MSG_DP_LOCAL_STEPS",
    "MSG_NO_GRADIENT_ACCESS",
    "MSG_NO_LINEAR_HEAD",
    "SSIM_THRESHOLD",
    "Defence",
    "InversionSettings",
    "MatchedImages",
    "ObservedUpdate",
    "Reconstruction",
    "ReconstructionResult",
    "batch_gradient",
    "dp_defence",
    "infer_labels",
    "invert_gradients",
    "match_images",
    "observe_update",
    "psnr",
    "reconstruction_attack",
    "reconstruction_section",
    "ssim",
    "trainable_parameters",
]
