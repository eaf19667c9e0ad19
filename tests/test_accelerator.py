"""The accelerator guard: an attached accelerator the framework cannot use is an error, never a
silent CPU fallback. TensorFlow / torch / the hardware are faked (no framework import here)."""
from __future__ import annotations

import importlib.metadata as md
from types import SimpleNamespace

import pytest

from siimcovid import accelerator as A
from siimcovid.errors import UserError


def fake_tf(gpus=0, tpu_ok=False, version="2.20.0", cuda=True):
    calls = []

    class Resolver:
        def __init__(self, tpu=None):
            calls.append(("resolver", tpu))
            if not tpu_ok:
                raise ValueError("Please provide a TPU Name to connect to.")

    def strategy(name, n=1):
        return SimpleNamespace(name=name, num_replicas_in_sync=n)

    return SimpleNamespace(
        __version__=version, calls=calls,
        config=SimpleNamespace(list_physical_devices=lambda kind: [f"/GPU:{i}" for i in range(gpus)],
                               experimental_connect_to_cluster=lambda r: None),
        tpu=SimpleNamespace(experimental=SimpleNamespace(initialize_tpu_system=lambda r: None)),
        test=SimpleNamespace(is_built_with_cuda=lambda: cuda),
        distribute=SimpleNamespace(
            cluster_resolver=SimpleNamespace(TPUClusterResolver=Resolver),
            TPUStrategy=lambda r: strategy("tpu", 8),
            MirroredStrategy=lambda: strategy("mirrored", gpus),
            get_strategy=lambda: strategy("default")))


NONE = A.Hardware()
T4X2 = A.Hardware(gpu="/dev/nvidia0")
TPU = A.Hardware(tpu="/dev/accel0")


def test_detect_hardware_reads_devices_and_tpu_env():
    globs = {"/dev/nvidia[0-9]*": ["/dev/nvidia1", "/dev/nvidia0"], "/dev/accel*": ["/dev/accel0"]}
    hw = A.detect_hardware(env={}, glob_=lambda p: globs.get(p, []))
    assert hw == A.Hardware(tpu="/dev/accel0", gpu="/dev/nvidia0")
    assert A.detect_hardware(env={"TPU_NAME": "local"}, glob_=lambda p: []).tpu == "$TPU_NAME"
    assert A.detect_hardware(env={"NVIDIA_VISIBLE_DEVICES": "all"}, glob_=lambda p: []) == NONE
    assert A.tpu_present(TPU) and not A.tpu_present(T4X2)


def test_two_gpus_get_a_mirrored_strategy_and_mixed_float16():
    strategy, device = A.get_strategy(hardware=T4X2, tf=fake_tf(gpus=2))
    assert (strategy.name, device) == ("mirrored", "gpu")
    assert A.precision_policy(True, device) == A.precision_policy("auto", device) == "mixed_float16"
    assert A.precision_policy("off", device) == "float32"


def test_gpu_session_where_tf_sees_no_gpu_is_loud():
    with pytest.raises(A.AcceleratorError, match=r"GPU is attached \(/dev/nvidia0\).*sees no GPU"):
        A.get_strategy(hardware=T4X2, tf=fake_tf(gpus=0, cuda=False))
    with pytest.raises(A.AcceleratorError, match="GPU was required"):
        A.get_strategy("gpu", hardware=NONE, tf=fake_tf(gpus=0))


def test_tpu_with_tensorflow_cpu_is_loud_not_a_cpu_fallback(monkeypatch):
    monkeypatch.setattr(A, "tf_distribution", lambda: "tensorflow-cpu")
    tf = fake_tf(tpu_ok=True)
    with pytest.raises(A.AcceleratorError, match="tensorflow-cpu.*cannot use it") as e:
        A.get_strategy(hardware=TPU, tf=tf)
    assert not tf.calls, "must fail before touching the resolver"
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)


def test_tpu_resolver_failure_is_loud(monkeypatch):
    monkeypatch.setattr(A, "tf_distribution", lambda: "tensorflow")
    with pytest.raises(A.AcceleratorError, match="cannot connect to it.*TPU Name"):
        A.get_strategy(hardware=TPU, tf=fake_tf(tpu_ok=False))
    with pytest.raises(A.AcceleratorError, match="TPU was required but none is attached"):
        A.get_strategy("tpu", hardware=NONE, tf=fake_tf())


def test_tpu_capable_tensorflow_gets_tpu_strategy(monkeypatch):
    monkeypatch.setattr(A, "tf_distribution", lambda: "tensorflow-tpu")
    strategy, device = A.get_strategy(hardware=TPU, tf=fake_tf(tpu_ok=True))
    assert (strategy.name, device, strategy.num_replicas_in_sync) == ("tpu", "tpu", 8)
    assert A.precision_policy("auto", device) == "mixed_bfloat16"


def test_no_accelerator_and_explicit_cpu():
    assert A.get_strategy(hardware=NONE, tf=fake_tf())[1] == "cpu"
    # "cpu" is a deliberate choice: no guard even when a GPU is attached
    assert A.get_strategy("cpu", hardware=T4X2, tf=fake_tf(gpus=0))[1] == "cpu"
    with pytest.raises(UserError, match="not one of"):
        A.get_strategy("tpuv5", hardware=NONE, tf=fake_tf())


def test_tf_distribution_names_the_installed_build():
    installed = {"tensorflow-cpu": "2.20.0"}

    def version(name):
        if name not in installed:
            raise md.PackageNotFoundError(name)
        return installed[name]

    assert A.tf_distribution(version) == "tensorflow-cpu"
    installed = {}
    assert A.tf_distribution(version) is None


def test_set_precision_takes_a_flag_a_policy_or_a_config():
    set_to = []
    keras = SimpleNamespace(mixed_precision=SimpleNamespace(set_global_policy=set_to.append))
    assert A.set_precision(True, "gpu", keras=keras) == "mixed_float16"
    assert A.set_precision(SimpleNamespace(mixed_precision="auto"), "cpu", keras=keras) == "float32"
    assert A.set_precision("mixed_bfloat16", "tpu", keras=keras) == "mixed_bfloat16"
    assert set_to == ["mixed_float16", "float32", "mixed_bfloat16"]
    with pytest.raises(UserError):
        A.set_precision("half", "gpu", keras=keras)


def test_torch_device():
    def torch(cuda):
        return SimpleNamespace(__version__="2.10.0", cuda=SimpleNamespace(is_available=lambda: cuda))

    assert A.torch_device(hardware=T4X2, torch=torch(True)) == "cuda"
    assert A.torch_device(hardware=NONE, torch=torch(False)) == "cpu"
    with pytest.raises(A.AcceleratorError, match="sees no CUDA"):
        A.torch_device(hardware=T4X2, torch=torch(False))
    with pytest.raises(A.AcceleratorError, match="has a TPU"):
        A.torch_device(hardware=TPU, torch=torch(False))
    with pytest.raises(A.AcceleratorError, match="GPU was required"):
        A.torch_device("gpu", hardware=NONE, torch=torch(False))
