import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from medaudit import InvalidInputError, InvalidParameterError
from medaudit.data import Cohort
from medaudit.inference import FORWARD_PASSES, Predictions, model_hash, predict


class Tiny(nn.Module):
    """Features = mean intensity per channel; head = linear."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[-4.0], [4.0]]))
            self.lin.bias.zero_()
        self.calls = 0

    def features(self, x):
        self.calls += 1
        return x.mean(dim=(2, 3))

    def head(self, f):
        return self.lin(f)

    def forward(self, x):
        return self.head(self.features(x))


def _cohort(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    imgs = (rng.random((n, 8, 8)) * 100 + y[:, None, None] * 120).astype(np.uint8)
    meta = pd.DataFrame({"label": y, "patient_id": [f"p{i // 2}" for i in range(n)]})
    return Cohort(meta, images=imgs)


def test_predictions_match_a_manual_forward_pass():
    model, cohort = Tiny(), _cohort()
    preds = predict(model, cohort, batch_size=7)
    x = torch.from_numpy(cohort.images.astype(np.float32) / 255)  # (n, 1, 8, 8)
    logits = model(x)
    expected = torch.softmax(logits, 1).detach().numpy()
    assert np.allclose(preds.scores, expected, atol=1e-6)
    loss = nn.functional.cross_entropy(
        logits, torch.from_numpy(np.array(cohort.labels)), reduction="none"
    )
    assert np.allclose(preds.loss, loss.detach().numpy(), atol=1e-6)
    assert preds.features.shape == (40, 1)
    assert preds.meta["patient_id"].tolist() == cohort.meta["patient_id"].tolist()


def test_cache_runs_the_model_once(tmp_path):
    model, cohort = Tiny(), _cohort()
    before = FORWARD_PASSES["count"]
    a = predict(model, cohort, cache_dir=tmp_path, batch_size=16)
    calls = model.calls
    b = predict(model, cohort, cache_dir=tmp_path, batch_size=16)
    assert FORWARD_PASSES["count"] == before + 1 and model.calls == calls
    assert np.array_equal(a.scores, b.scores) and a.meta.equals(b.meta)
    # a changed model is a different cache key
    with torch.no_grad():
        model.lin.bias += 0.1
    predict(model, cohort, cache_dir=tmp_path)
    assert FORWARD_PASSES["count"] == before + 2


def test_model_hash_changes_with_weights():
    m = Tiny()
    h = model_hash(m)
    assert h == model_hash(m)
    with torch.no_grad():
        m.lin.weight[0, 0] += 1
    assert h != model_hash(m)


def test_plain_module_without_features():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    preds = predict(model, _cohort())
    assert preds.features is None and preds.scores.shape == (40, 2)


def test_bad_inputs():
    with pytest.raises(InvalidParameterError, match="'cohort' parameter of predict"):
        predict(Tiny(), np.zeros((3, 8, 8)))
    with pytest.raises(InvalidInputError, match="no images"):
        predict(Tiny(), _cohort().subset(np.array([], dtype=int)))


def test_predictions_save_load_round_trip(tmp_path):
    p = predict(Tiny(), _cohort())
    p.save(tmp_path / "p.npz")
    q = Predictions.load(tmp_path / "p.npz")
    assert np.array_equal(p.scores, q.scores) and np.array_equal(p.features, q.features)
    pd.testing.assert_frame_equal(p.meta, q.meta)
    frame = p.to_frame()
    assert {"label", "score", "patient_id"} <= set(frame.columns)
