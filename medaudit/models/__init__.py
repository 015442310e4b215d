"""Architecture zoo, safe checkpoint I/O and the one training loop with its hooks."""

from medaudit.models._averaging import WeightAverage
from medaudit.models._batchnorm import precise_batchnorm
from medaudit.models._checkpoint import (
    CHECKPOINT_FORMAT,
    LoadedModel,
    load_checkpoint,
    save_checkpoint,
)
from medaudit.models._hooks import Step, TrainHooks
from medaudit.models._samplers import (
    BatchSampler,
    ClassBalancedSampler,
    PoissonSampler,
    ShuffleSampler,
    make_sampler,
)
from medaudit.models._training import (
    LocalUpdate,
    TrainResult,
    auroc_and_ece,
    compute_normalization,
    local_update,
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
    "BatchSampler",
    "ClassBalancedSampler",
    "DenseNet121",
    "LoadedModel",
    "LocalUpdate",
    "PoissonSampler",
    "ResNet18",
    "ShuffleSampler",
    "SmallCNN",
    "Step",
    "TrainHooks",
    "TrainResult",
    "WeightAverage",
    "auroc_and_ece",
    "build_model",
    "compute_normalization",
    "list_architectures",
    "load_checkpoint",
    "local_update",
    "macro_ovr_auroc",
    "make_sampler",
    "precise_batchnorm",
    "register_architecture",
    "save_checkpoint",
    "train_model",
]
