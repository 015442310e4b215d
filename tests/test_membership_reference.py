"""Reference models: inclusion designs, the content-hash cache, and the parallel backends."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from medaudit import InvalidInputError
from medaudit.attacks.membership import (
    ReferenceTraining,
    balanced_inclusion,
    random_inclusion,
    train_reference_models,
)
from medaudit.attacks.membership import _reference as ref_mod
from medaudit.attacks.membership._reference import MSG_NO_CLUSTER, resolve_backend
from medaudit.data import Cohort

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAINING = ReferenceTraining(
    arch="small_cnn", image_size=16, epochs=2, batch_size=16, mean=(0.5,), std=(0.25,)
)


@pytest.fixture
def pool():
    rng = np.random.default_rng(0)
    meta = pd.DataFrame(
        {"label": rng.integers(0, 2, 48), "patient_id": np.repeat(np.arange(24), 2)}
    )
    return Cohort(meta, images=rng.integers(0, 256, (48, 16, 16), dtype=np.uint8))


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    real = ref_mod._train_job

    def counted(job):
        calls.append(job.index)
        return real(job)

    monkeypatch.setattr(ref_mod, "_train_job", counted)
    return calls


def _weights(models):
    return [torch.cat([p.detach().flatten() for p in m.state_dict().values()]) for m in models]


def test_random_inclusion_takes_whole_patients_and_balanced_halves_each_unit():
    units = np.repeat(np.arange(30), 3)
    inc = random_inclusion(90, 5, 30, units=units, random_state=1)
    assert inc.shape == (5, 90) and (inc.sum(axis=1) == 30).all()
    for row in inc:  # a patient's images are in or out together
        assert (row.reshape(30, 3).all(axis=1) == row.reshape(30, 3).any(axis=1)).all()
    bal = balanced_inclusion(90, 6, units=units, random_state=1)
    assert (bal.sum(axis=0) == 3).all()
    assert (bal.reshape(6, 30, 3).all(axis=2) == bal.reshape(6, 30, 3).any(axis=2)).all()
    with pytest.raises(ValueError, match="an even int >= 2"):
        balanced_inclusion(10, 3)


def test_a_second_run_loads_every_model_from_the_cache(pool, tmp_path, count_training):
    inc = random_inclusion(len(pool), 2, 20, units=pool.meta["patient_id"], random_state=0)
    first = train_reference_models(pool, inc, TRAINING, cache_dir=tmp_path, backend="serial")
    assert first.from_cache == 0 and count_training == [0, 1]
    assert len(list(tmp_path.glob("reference-*.safetensors"))) == 2
    second = train_reference_models(pool, inc, TRAINING, cache_dir=tmp_path, backend="serial")
    assert second.from_cache == 2 and second.backend == "cache" and count_training == [0, 1]
    for a, b in zip(_weights(first.models), _weights(second.models), strict=True):
        assert torch.equal(a, b)
    # other data, other recipe or other seed: trained again
    changed = pool.subset(np.arange(len(pool)))
    changed.images = changed.images.copy()
    changed.images[np.flatnonzero(inc[0] & ~inc[1])[0]] ^= 1  # an image of model 0 only
    train_reference_models(changed, inc, TRAINING, cache_dir=tmp_path, backend="serial")
    assert count_training == [0, 1, 0]
    train_reference_models(
        pool,
        inc[:1],
        TRAINING.__class__(**{**TRAINING.__dict__, "epochs": 1}),
        cache_dir=tmp_path,
        backend="serial",
    )
    train_reference_models(pool, inc[:1], TRAINING, seed=5, cache_dir=tmp_path, backend="serial")
    assert count_training == [0, 1, 0, 0, 0]
    off = train_reference_models(
        pool, inc[:1], TRAINING, cache=False, cache_dir=tmp_path, backend="serial"
    )
    assert off.from_cache == 0 and count_training[-1] == 0


def test_a_damaged_cache_file_is_trained_again(pool, tmp_path, count_training):
    inc = random_inclusion(len(pool), 1, 20, random_state=0)
    train_reference_models(pool, inc, TRAINING, cache_dir=tmp_path, backend="serial")
    (path,) = tmp_path.glob("reference-*.safetensors")
    path.write_bytes(b"not a checkpoint")
    again = train_reference_models(pool, inc, TRAINING, cache_dir=tmp_path, backend="serial")
    assert again.from_cache == 0 and len(count_training) == 2


class _FakeRay(types.ModuleType):
    """The few Ray calls medaudit makes, run in-process (no cluster is started)."""

    def __init__(self, initialized: bool):
        super().__init__("ray")
        self.initialized, self.init_calls, self.tasks = initialized, [], 0

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.init_calls.append(kwargs)
        self.initialized = True

    def remote(self, **opts):
        assert opts == {"num_cpus": 1}
        fake = self

        def wrap(fn):
            class Remote:
                @staticmethod
                def remote(job):
                    fake.tasks += 1
                    return fn(job)

            return Remote

        return wrap

    def get(self, value):
        return value


def test_an_initialised_ray_cluster_gets_the_jobs_and_gives_the_same_weights(
    pool, tmp_path, monkeypatch
):
    inc = random_inclusion(len(pool), 2, 20, random_state=0)
    serial = train_reference_models(pool, inc, TRAINING, cache=False, backend="serial")
    fake = _FakeRay(initialized=True)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    on_ray = train_reference_models(pool, inc, TRAINING, cache=False, backend="auto")
    assert on_ray.backend == "ray" and fake.tasks == 2 and fake.init_calls == []
    for a, b in zip(_weights(serial.models), _weights(on_ray.models), strict=True):
        assert torch.equal(a, b)


def test_ray_address_is_joined_and_no_cluster_is_ever_started(monkeypatch):
    fake = _FakeRay(initialized=False)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_backend("auto", workers=1, n_jobs=4) == "serial"
    assert resolve_backend("auto", workers=2, n_jobs=4) == "process"
    assert fake.init_calls == []  # nothing started
    with pytest.raises(InvalidInputError) as e:
        resolve_backend("ray", workers=1, n_jobs=4)
    assert str(e.value) == MSG_NO_CLUSTER
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_backend("auto", workers=1, n_jobs=4) == "ray"
    assert fake.init_calls == [{"address": "10.0.0.1:6379", "log_to_driver": False}]


@pytest.mark.slow
def test_worker_processes_give_the_same_weights_as_in_process(pool):
    # spawn-started workers (one torch thread each) and this process train identically;
    # slow only because each worker imports torch afresh.
    inc = random_inclusion(len(pool), 2, 20, random_state=0)
    serial = train_reference_models(pool, inc, TRAINING, cache=False, backend="serial")
    procs = train_reference_models(pool, inc, TRAINING, cache=False, backend="process", workers=2)
    assert procs.backend == "process"
    for a, b in zip(_weights(serial.models), _weights(procs.models), strict=True):
        assert torch.equal(a, b)


def test_bad_arguments_are_refused(pool):
    with pytest.raises(ValueError, match="'inclusion' parameter"):
        train_reference_models(pool, np.ones((1, 3), bool), TRAINING)
    with pytest.raises(InvalidInputError, match="at least one training image"):
        train_reference_models(pool, np.zeros((1, len(pool)), bool), TRAINING)
    with pytest.raises(ValueError, match="'backend' parameter"):
        train_reference_models(pool, np.ones((1, len(pool)), bool), TRAINING, backend="gpu")
    with pytest.raises(ValueError, match="'epochs' parameter of ReferenceTraining"):
        ReferenceTraining(epochs=0)


def frozen_trainer(model, cohort, training, seed):
    """A custom reference trainer: leaves the initial weights but for the head's bias."""
    with torch.no_grad():
        model.head.bias.fill_(dict(training.trainer_options)["bias"])


def test_a_custom_trainer_replaces_the_loop_and_is_part_of_the_cache_key(pool, tmp_path):
    import dataclasses

    inc = random_inclusion(len(pool), 1, 20, random_state=0)
    custom = dataclasses.replace(TRAINING, trainer=frozen_trainer, trainer_options=(("bias", 3.0),))
    a = train_reference_models(pool, inc, custom, cache_dir=tmp_path, backend="serial")
    assert torch.equal(a.models[0].head.bias, torch.full((2,), 3.0))
    other = dataclasses.replace(custom, trainer_options=(("bias", 1.0),))
    b = train_reference_models(pool, inc, other, cache_dir=tmp_path, backend="serial")
    plain = train_reference_models(pool, inc, TRAINING, cache_dir=tmp_path, backend="serial")
    assert len({a.keys[0], b.keys[0], plain.keys[0]}) == 3
    assert custom.to_dict()["trainer"].endswith("test_membership_reference.frozen_trainer")
    with pytest.raises(ValueError, match="'trainer' parameter"):
        ReferenceTraining(trainer="train_model")  # type: ignore[arg-type]


@pytest.mark.skipif(
    "MEDAUDIT_TEST_RAY" not in __import__("os").environ,
    reason="starts a local Ray cluster: opt in with MEDAUDIT_TEST_RAY=1",
)
@pytest.mark.filterwarnings("ignore::FutureWarning")  # ray.init's accelerator tip
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Ray's Popen
def test_a_real_local_ray_cluster_trains_the_same_models(pool):
    ray = pytest.importorskip("ray")
    inc = random_inclusion(len(pool), 2, 20, random_state=0)
    serial = train_reference_models(pool, inc, TRAINING, cache=False, backend="serial")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = train_reference_models(pool, inc, TRAINING, cache=False)
    finally:
        ray.shutdown()
    assert on_ray.backend == "ray"
    for a, b in zip(_weights(serial.models), _weights(on_ray.models), strict=True):
        assert torch.equal(a, b)
