"""The TensorFlow runtime setup (classify.runtime.prepare): memory growth on every GPU before any
op, op determinism on the CPU, fixed threads; idempotent; and every TF entry point goes through it
first (issue 20, finding 4)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from siimcovid.classify import runtime


class FakeTF:
    """tf.config as far as prepare uses it; any other op 'initialises the devices', after which
    memory growth raises RuntimeError like TensorFlow's."""

    def __init__(self, gpus=("GPU:0", "GPU:1")):
        self.calls: list[tuple] = []
        self.initialised = False
        self._gpus = [SimpleNamespace(name=f"/physical_device:{g}") for g in gpus]
        fake = self

        def set_memory_growth(dev, on):
            if fake.initialised:
                raise RuntimeError("Physical devices cannot be modified after being initialized")
            fake.calls.append(("growth", dev.name, on))

        def record(name):
            return lambda *a: fake.calls.append((name, *a))

        self.config = SimpleNamespace(
            list_physical_devices=lambda kind: list(fake._gpus) if kind == "GPU" else [],
            experimental=SimpleNamespace(set_memory_growth=set_memory_growth,
                                         enable_op_determinism=record("determinism")),
            threading=SimpleNamespace(set_intra_op_parallelism_threads=record("intra"),
                                      set_inter_op_parallelism_threads=record("inter")))


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(runtime, "_PREPARED", {})


def test_memory_growth_on_every_gpu_first_and_only_once(fresh):
    tf = FakeTF()
    facts = runtime.prepare(threads=2, tf=tf)
    assert tf.calls[:2] == [("growth", "/physical_device:GPU:0", True), ("growth", "/physical_device:GPU:1", True)]
    assert ("intra", 2) in tf.calls and ("inter", 2) in tf.calls
    assert facts == {"gpus": 2, "memory_growth": ["/physical_device:GPU:0", "/physical_device:GPU:1"],
                     "deterministic": False, "threads": 2}  # GPU: the fast kernels stay
    tf.initialised = True  # ops ran since: a second call must not touch the devices again
    n = len(tf.calls)
    assert runtime.prepare(threads=4, tf=tf) == facts and len(tf.calls) == n


def test_cpu_is_deterministic_and_harmless(fresh):
    tf = FakeTF(gpus=())
    facts = runtime.prepare(tf=tf)
    assert tf.calls == [("determinism",)]
    assert facts == {"gpus": 0, "memory_growth": [], "deterministic": True, "threads": 0}


def test_too_late_is_a_warning_not_a_crash(fresh):
    tf = FakeTF(gpus=("GPU:0",))
    tf.initialised = True
    assert runtime.prepare(tf=tf)["memory_growth"] == []


class Prepared(Exception):
    pass


def _stop(*a, **kw):
    raise Prepared


def test_every_tf_entry_point_prepares_first(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "prepare", _stop)
    from siimcovid.binary import predict as binary_predict
    from siimcovid.study import predict as study_predict

    with pytest.raises(Prepared):  # before any fold is read (a fold that fails would be recorded instead)
        binary_predict.predict_folds([tmp_path / "nofold"], tmp_path)
    with pytest.raises(Prepared):
        study_predict.predict_folds([tmp_path / "nofold"], tmp_path, progress=False)
    with pytest.raises(Prepared):  # training: setup() is the first TF call of train_fold
        runtime.setup(SimpleNamespace(threads=1, mixed_precision="off"))


def test_real_tensorflow_accepts_it(fresh):
    pytest.importorskip("tensorflow")
    facts = runtime.prepare()
    assert facts["gpus"] == 0 or facts["memory_growth"]
    assert runtime.prepare() == facts
