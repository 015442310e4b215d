"""Architecture zoo, safe checkpoint I/O and the one training loop."""

from medaudit.models._checkpoint import (
    CHECKPOINT_FORMAT,
    LoadedModel,
    load_checkpoint,
    save_checkpoint,
)
from medaudit.models._training import (
    TrainResult,
    compute_normalization,
    macro_ovr_auroc,
    train_model,
)
from medaudit.models._zoo import (
    DenseNet121,
    ResNet18,
    SmallCNN,
    build_model,
    list_architectures,
    register_architecture,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "DenseNet121",
    "LoadedModel",
    "ResNet18",
    "SmallCNN",
    "TrainResult",
    "build_model",
    "compute_normalization",
    "list_architectures",
    "load_checkpoint",
    "macro_ovr_auroc",
    "register_architecture",
    "save_checkpoint",
    "train_model",
]
