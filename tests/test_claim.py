"""One writer per fold folder (runs.claim, issue 20): a second process training into the same
fold refuses, naming the holder; a dead process's lock is taken over with a warning; every
stage's fold training claims its folder before anything else."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from siimcovid import runs

ROOT = Path(__file__).resolve().parents[1]


def _lock(d: Path, pid: int, host: str | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / runs.LOCK_FILE
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "earlier"}))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_process_refuses_while_the_first_trains(tmp_path):
    fold = tmp_path / "exp" / "fold0"
    with runs.claim(fold) as lock:
        held = json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        code = textwrap.dedent(f"""
            from siimcovid.runs import claim
            with claim({str(fold)!r}):
                print("trained")
        """)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "utils_dataset")}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode != 0 and "trained" not in proc.stdout
        assert "another process is training into this fold" in proc.stderr
        assert f"pid {os.getpid()} on this host" in proc.stderr and str(fold / runs.LOCK_FILE) in proc.stderr
        with pytest.raises(runs.FoldBusy):  # the same process twice is two writers too
            with runs.claim(fold):
                pass
    assert not lock.exists()
    with runs.claim(fold):  # released: the next run goes
        pass


def test_a_dead_processs_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    fold = tmp_path / "fold1"
    dead = _dead_pid()
    _lock(fold, dead)
    from siimcovid.log import get_logger

    get_logger().propagate = True  # so caplog sees it
    try:
        with runs.claim(fold) as lock:
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    finally:
        get_logger().propagate = False
    assert f"stale lock of pid {dead}" in caplog.text
    assert not lock.exists()


def test_another_hosts_lock_refuses_and_an_error_releases(tmp_path):
    fold = tmp_path / "fold2"
    path = _lock(fold, 1, host="elsewhere")
    with pytest.raises(runs.FoldBusy, match=r"pid 1 on host elsewhere.*delete .*train.lock if that run is dead"):
        with runs.claim(fold):
            pass
    assert path.exists()  # not ours: left alone
    path.unlink()
    with pytest.raises(ValueError):
        with runs.claim(fold):
            raise ValueError("training failed")
    assert not (fold / runs.LOCK_FILE).exists()
    fresh = tmp_path / "never" / "fold0"
    with pytest.raises(ValueError):
        with runs.claim(fresh):
            raise ValueError("a check failed before anything was written")
    assert not (tmp_path / "never").exists()  # folders the claim made and nothing filled are removed again


def test_every_stage_claims_its_fold_before_training(tmp_path):
    """A live lock in the fold folder stops the classifier core and the detector before any work."""
    pytest.importorskip("tensorflow")
    from siimcovid.binary.config import load_config
    from siimcovid.binary.train import train_fold as binary_train

    live = os.getppid()  # alive, and not this process
    cfg = load_config("tiny_cpu", {"workdir": str(tmp_path / "work"), "fold": 0, "preprocess": str(tmp_path / "none")})
    _lock(cfg.out_dir(), live)
    with pytest.raises(runs.FoldBusy, match=f"pid {live}"):
        binary_train(cfg)

    pytest.importorskip("mmdet")
    from siimcovid.detect import config as C
    from siimcovid.detect import train as DT

    det = C.load("tiny_cpu", ["siim.size=64", "siim.fold=1"])
    _lock(DT.run_dir(det, tmp_path / "det"), live)
    with pytest.raises(runs.FoldBusy, match=f"pid {live}"):
        DT.train_fold(det, preprocess=str(tmp_path / "none"), workdir=str(tmp_path / "det"))
