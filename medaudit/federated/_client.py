"""The site's side of a federation: a Flower ``ClientApp`` built around any torch model.

:func:`make_client_app` registers one handler per message the server sends:

==========================  ============================================================
message type                what the site does (on its own data only)
==========================  ============================================================
``query.describe``          counts per split, image shape, pixel mean/std (for one
                            global normalisation), the attribute columns it can audit
``train``                   trains the global model for ``local-epochs`` through
                            :func:`medaudit.models.local_update` (FedProx's proximal
                            term as a training-loop hook), or with DP-SGD through
                            :func:`medaudit.privacy.train_private` (sample-level DP,
                            its steps reported for the ledger); replies with its weights
``evaluate``                AUROC and loss of the global model on its test split
``query.site_report``       the final model's AUROC with a patient-bootstrap CI, (once)
                            a local-only model trained for the same epochs, and the
                            audit's confusion counts and score histograms per group
``query.audit_moments``     the per-patient sums the clustered intervals need
==========================  ============================================================

The site never sends a score, a label or an image: only weights, counts, histograms and
summary numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from medaudit.federated._records import (
    load_arrays,
    moments_to_records,
    state_to_arrays,
    stats_from_records,
    stats_to_records,
)
from medaudit.federated._sites import (
    FaultPlan,
    SiteData,
    flipped,
    group_columns,
    paired_auroc,
    site_seed,
)
from medaudit.federated._stats import add_laplace_noise, cluster_moments, site_statistics

__all__ = ["ModelFn", "SiteLoader", "make_client_app", "model_from_config"]

#: ``load_site(context) -> SiteData``: the site's own data (from its node config).
SiteLoader = Callable[[Any], SiteData]
#: ``model_fn(config) -> torch.nn.Module``: a fresh model for the run's config.
ModelFn = Callable[[Any], nn.Module]


def model_from_config(config: Any) -> nn.Module:
    """A zoo model for the run: ``arch``, ``in-channels``, ``num-classes`` of the config."""
    from medaudit.models import build_model

    return build_model(
        str(config["arch"]),
        in_channels=int(config["in-channels"]),
        num_classes=int(config["num-classes"]),
    )


def _train_options(config: Any, site: SiteData, salt: int) -> dict[str, Any]:
    """Keyword arguments of the training loop from the server's config."""
    size = int(config["image-size"])
    return {
        "batch_size": int(config["batch-size"]),
        "lr": float(config["lr"]),
        "mean": [float(v) for v in config["mean"]],
        "std": [float(v) for v in config["std"]],
        "image_size": size if size > 0 else None,
        "in_channels": int(config["in-channels"]),
        "seed": site_seed(site.name, int(config["seed"]) + salt),
    }


def _positive_scores(model: nn.Module, cohort: Any, config: Any) -> np.ndarray:
    """The model's positive-class probability for each image of ``cohort``."""
    from medaudit.inference import predict

    size = int(config["image-size"])
    preds = predict(
        model,
        cohort,
        image_size=size if size > 0 else None,
        in_channels=int(config["in-channels"]),
        mean=[float(v) for v in config["mean"]],
        std=[float(v) for v in config["std"]],
        features=False,
    )
    return preds.scores[:, 1] if preds.scores.shape[1] == 2 else preds.scores.max(axis=1)


def _proximal_term(model: nn.Module, mu: float) -> Callable[[Any], Any]:
    """FedProx's ``mu / 2 * ||w - w_global||^2`` as an ``extra_losses`` hook (Li et al. 2020)."""
    anchor = [p.detach().clone() for p in model.parameters()]

    def term(step: Any) -> Any:
        params = list(model.parameters())
        return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))

    return term


def _set_threads(config: Any) -> None:
    n = int(config.get("torch-threads", 0))
    if n > 0:
        import torch

        torch.set_num_threads(n)


def make_client_app(
    load_site: SiteLoader,
    *,
    model_fn: ModelFn | None = None,
    faults: FaultPlan | None = None,
) -> Any:
    """A Flower ``ClientApp`` that trains, evaluates and audits on one site's data.

    Parameters
    ----------
    load_site : callable
        ``load_site(context) -> SiteData`` returns this site's data; it is given the
        Flower ``Context`` (``context.node_config`` names the site's data).
    model_fn : callable, optional
        ``model_fn(config) -> torch.nn.Module`` builds the model; default: the zoo
        architecture named in the run's config (:func:`model_from_config`).
    faults : FaultPlan, optional
        Faults to inject (tests and red-team experiments).

    Returns
    -------
    flwr.clientapp.ClientApp

    References
    ----------
    .. [1] McMahan B, et al. Communication-efficient learning of deep networks from
           decentralized data. AISTATS 2017.
    .. [2] Li T, et al. Federated optimization in heterogeneous networks. MLSys 2020.
    """
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.clientapp.mod import fixedclipping_mod
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    build = model_fn or model_from_config
    plan = faults or FaultPlan()
    app = ClientApp()

    def reply(msg: Any, records: dict[str, Any]) -> Any:
        return Message(RecordDict(records), reply_to=msg)

    @app.query("describe")
    def describe(msg: Any, context: Any) -> Any:
        site = load_site(context)
        return reply(msg, {"site": ConfigRecord(_describe(site))})

    def _train(msg: Any, context: Any) -> Any:
        site = load_site(context)
        config = msg.content["config"]
        _set_threads(config)
        rnd = int(config["server-round"])
        arm = str(config.get("arm", ""))
        plan.before_training(site.name, rnd, arm)
        model = load_arrays(build(config), msg.content["arrays"])
        mu = float(config.get("proximal-mu", 0.0))
        from medaudit.models import TrainHooks, local_update

        hooks = TrainHooks(extra_losses=(_proximal_term(model, mu),)) if mu > 0 else None
        cohort = flipped(site.train) if plan.poisoned(site.name, arm) else site.train
        options = _train_options(config, site, 1000 * rnd)
        if float(config.get("sample-dp-noise", 0.0)) > 0:
            state, metrics = _private_update(model, cohort, config, options)
        else:
            up = local_update(
                model, cohort, epochs=int(config["local-epochs"]), hooks=hooks, **options
            )
            state = up.state
            metrics = {
                "train-loss": float(up.train_loss),
                "steps": int(up.steps),
                "n-train": int(up.n_examples),
            }
        n = int(metrics["n-train"])
        metrics["num-examples"] = 1 if bool(config.get("uniform-weights", False)) else n
        return reply(msg, {"arrays": state_to_arrays(state), "metrics": MetricRecord(metrics)})

    @app.train()
    def train(msg: Any, context: Any) -> Any:
        # Flower's client-side clipping mod runs only when the DP wrapper asks for it:
        # attached to the whole app it would break every evaluate call.
        if KEY_CLIPPING_NORM in msg.content["config"]:
            return fixedclipping_mod(msg, context, _train)
        return _train(msg, context)

    @app.evaluate()
    def evaluate(msg: Any, context: Any) -> Any:
        site = load_site(context)
        config = msg.content["config"]
        _set_threads(config)
        model = load_arrays(build(config), msg.content["arrays"])
        s = _positive_scores(model, site.test, config)
        y = site.test.labels > 0
        from medaudit.stats import auroc

        eps = 1e-7
        loss = -np.mean(np.where(y, np.log(np.clip(s, eps, 1)), np.log(np.clip(1 - s, eps, 1))))
        metrics: dict[str, Any] = {
            "num-examples": len(y),
            "auroc": float(auroc(y, s)) if 0 < y.sum() < len(y) else float("nan"),
            "loss": float(loss),
        }
        return reply(msg, {"metrics": MetricRecord(metrics)})

    @app.query("site_report")
    def site_report(msg: Any, context: Any) -> Any:
        site = load_site(context)
        config = msg.content["config"]
        _set_threads(config)
        cohort = _audit_cohort(site, config)
        fed = _positive_scores(load_arrays(build(config), msg.content["arrays"]), cohort, config)
        scores = {"federated": fed}
        if bool(config["train-local"]):
            poisoned = plan.poisoned(site.name, str(config.get("arm", "")))
            local = _local_only_scores(site, config, build, msg.content["initial"], poisoned)
            scores["local"] = local
        clusters = (
            cohort.meta["patient_id"].astype(str).to_numpy()
            if "patient_id" in cohort.meta.columns
            else None
        )
        out = paired_auroc(
            cohort.labels,
            scores,
            clusters=clusters,
            n_boot=int(config["n-bootstrap"]),
            random_state=site_seed(site.name, int(config["seed"])),
        )
        arrays, meta = stats_to_records(_audit_statistics(site, cohort, fed, config))
        metrics = MetricRecord({k: float(v) for k, v in out.items()})
        return reply(msg, {"metrics": metrics, "stats": arrays, "stats-config": meta})

    @app.query("audit_moments")
    def audit_moments(msg: Any, context: Any) -> Any:
        site = load_site(context)
        config = msg.content["config"]
        _set_threads(config)
        cohort = _audit_cohort(site, config)
        s = _positive_scores(load_arrays(build(config), msg.content["arrays"]), cohort, config)
        pooled = stats_from_records(msg.content["pooled"], msg.content["pooled-config"])
        moments = cluster_moments(
            cohort.labels,
            s,
            groups=group_columns(cohort.meta, site.sensitive),
            clusters=cohort.meta["patient_id"].astype(str).to_numpy()
            if "patient_id" in cohort.meta.columns
            else None,
            pooled=pooled,
        )
        arrays, meta = moments_to_records(moments)
        return reply(msg, {"moments": arrays, "moments-config": meta})

    return app


def _private_update(
    model: nn.Module, cohort: Any, config: Any, options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One round of DP-SGD on the site's data (medaudit.privacy); its steps for the ledger."""
    from medaudit.privacy import train_private

    res = train_private(
        model,
        cohort,
        None,
        noise_multiplier=float(config["sample-dp-noise"]),
        target_delta=float(config["sample-dp-delta"]),
        epochs=int(config["local-epochs"]),
        max_grad_norm=float(config["sample-dp-clip"]),
        accountant=str(config["sample-dp-accountant"]),
        patience=None,
        **options,
    )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # trained in place
    loss = res.training.history["train_loss"]
    metrics = {
        "train-loss": float(loss.iloc[-1]) if len(loss) else float("nan"),
        "steps": int(res.ledger.steps),
        "n-train": len(cohort),
        "dp-steps": int(res.ledger.steps),
        "dp-sample-rate": float(res.ledger.sample_rate),
    }
    return state, metrics


def _describe(site: SiteData) -> dict[str, Any]:
    from medaudit.models import compute_normalization

    ref = site.train if len(site.train) else site.test
    c, h, w = ref.image_shape
    labels = np.concatenate([site.train.labels, site.test.labels])
    mean, std = compute_normalization(ref) if len(ref) else ([0.0] * c, [1.0] * c)
    return {
        "name": site.name,
        **{k.replace("_", "-"): int(v) for k, v in site.counts.items()},
        "n-negative": int(np.sum(labels == 0)),
        "num-classes": int(labels.max()) + 1 if len(labels) else 2,
        "channels": int(c),
        "height": int(h),
        "width": int(w),
        "pixels": float(len(ref) * h * w),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "sensitive": json.dumps(list(site.sensitive)),
        "split-source": site.split_source,
    }


def _audit_statistics(site: SiteData, cohort: Any, scores: np.ndarray, config: Any) -> Any:
    """The site's sufficient statistics (with Laplace noise for a DP release when asked)."""
    stats = site_statistics(
        cohort.labels,
        scores,
        groups=group_columns(cohort.meta, site.sensitive),
        threshold=float(config["threshold"]),
        n_bins=int(config["n-bins"]),
    )
    eps = float(config.get("noise-epsilon", -1.0))
    if eps > 0:
        rng = np.random.default_rng(site_seed(site.name, int(config["seed"]) + 17))
        stats = add_laplace_noise(stats, epsilon=eps, random_state=rng)
    return stats


def _audit_cohort(site: SiteData, config: Any) -> Any:
    """The rows the federated audit scores: the test split, or all the site's rows."""
    if str(config.get("audit-split", "test")) == "all" and len(site.train):
        import pandas as pd

        from medaudit.data import Cohort

        meta = pd.concat([site.train.meta, site.test.meta], ignore_index=True)
        images = (
            None
            if site.train.images is None
            else np.concatenate([site.train.images, site.test.images])
        )
        return Cohort(
            meta,
            images=images,
            root=site.train.root,
            class_names=site.train.class_names,
            name=f"{site.name}:all",
        )
    return site.test


def _local_only_scores(
    site: SiteData, config: Any, build: ModelFn, initial: Any, poisoned: bool
) -> np.ndarray:
    """Scores of a model trained on this site alone for the federation's total epochs."""
    from medaudit.models import train_model

    model = load_arrays(build(config), initial)
    cohort = flipped(site.train) if poisoned else site.train
    train_model(
        model,
        cohort,
        None,
        epochs=int(config["local-only-epochs"]),
        patience=None,
        **_train_options(config, site, 0),
    )
    return _positive_scores(model, site.test, config)
