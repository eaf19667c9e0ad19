"""run-local: the graph's notebooks in graph order, each with a Kaggle-shaped input folder (checked
through a recording executor), resumable; one real papermill run of the cheapest notebook; the
collect kernel's copy."""
import json
import os
from pathlib import Path

import pytest

from siimcovid.errors import UserError
from siimcovid.kaggle import local as L
from siimcovid.kaggle.collect import collect, kernel_outputs

ROOT = Path(__file__).resolve().parents[1]
FOLDS = ["siimcovid-train-study-fold-0", "siimcovid-train-study-fold-1"]  # the tiny profile's folds
BINARY = ["siimcovid-train-binary-fold-0", "siimcovid-train-binary-fold-1"]


class Recorder:
    """Stands in for papermill: records each call, checks nothing itself, writes an output file."""

    def __init__(self, fail: str | None = None):
        self.calls = []
        self.fail = fail

    def __call__(self, notebook, output, parameters, cwd, env):
        inp = Path(env["SIIM_INPUT"])
        mounted = {str(p.relative_to(inp)): p.resolve() for p in inp.glob("*/*/*") if p.is_symlink()}
        mounted.update({str(p.relative_to(inp)): p.resolve() for p in inp.glob("competitions/*")})
        seen = {k: sorted(x.name for x in v.iterdir()) for k, v in mounted.items() if k.startswith("notebooks/")}
        self.calls.append({"slug": cwd.name, "notebook": notebook.name, "params": parameters, "cwd": cwd,
                           "input": inp, "mounted": mounted, "seen": seen, "env": env})
        if self.fail == cwd.name:
            raise RuntimeError("PapermillExecutionError\nValueError: boom")
        (cwd / "work" / f"{cwd.name}.txt").write_text("out\n")


@pytest.fixture()
def data(tmp_path):
    d = tmp_path / "competition"
    d.mkdir()
    (d / "sample_submission.csv").write_text("id,PredictionString\n")
    return d


def _run(data, out, executor, *extra):
    return L.cli(["--data", str(data), "--out", str(out), "--profile", "tiny", *extra], executor=executor)


def test_kernels_run_in_order_on_a_kaggle_shaped_input(tmp_path, data, capsys):
    out, rec = tmp_path / "out", Recorder()
    assert _run(data, out, rec) == 0
    order = [c["slug"] for c in rec.calls]
    assert order[:2] == ["siimcovid-wheels", "siimcovid-preprocess"] and order[-1] == "siimcovid-inference"
    assert set(BINARY + FOLDS) <= set(order[2:-1])
    by = {c["slug"]: c for c in rec.calls}
    utils = (ROOT / "utils_dataset").resolve()
    for c in rec.calls:
        assert c["cwd"] == (out / c["slug"]).resolve() and c["input"] == (out / c["slug"] / "input").resolve()
        assert c["mounted"]["datasets/local/siimcovid-utils"] == utils
        assert str(utils) in c["env"]["PYTHONPATH"].split(os.pathsep)
    pre = by["siimcovid-preprocess"]
    assert pre["mounted"]["competitions/siim-covid19-detection"] == data.resolve()
    assert pre["mounted"]["notebooks/local/siimcovid-wheels"] == (out / "siimcovid-wheels" / "work").resolve()
    assert pre["seen"]["notebooks/local/siimcovid-wheels"] == ["siimcovid-wheels.txt"]  # upstream's output
    assert pre["params"] == {"sizes": [64, 128], "workers": 1, "n_folds": 2}
    fold1 = by[FOLDS[1]]
    assert fold1["params"]["fold"] == 1 and fold1["params"]["config"] == "tiny_cpu"
    assert fold1["params"]["make_tiny_hub"] == f"{(out / FOLDS[1]).resolve()}/tiny_hub"
    assert set(fold1["mounted"]) == {"datasets/local/siimcovid-utils", "notebooks/local/siimcovid-wheels",
                                     "notebooks/local/siimcovid-preprocess"}
    inf = by["siimcovid-inference"]
    assert {f"notebooks/local/{f}" for f in FOLDS + BINARY} <= set(inf["mounted"])
    assert by[BINARY[1]]["params"]["fold"] == 1 and by[BINARY[1]]["params"]["members"] == ["tiny_cpu"]
    assert "competitions/siim-covid19-detection" in inf["mounted"]
    text = capsys.readouterr().out
    k = order.index(FOLDS[0]) + 1
    assert f"[{k}/{len(order)}] siimcovid-train-study-fold-0: running train-study.ipynb (not available here: google/" in text
    assert text.count(": done in") == len(order)

    # resumable: everything done is skipped
    rec2 = Recorder()
    assert _run(data, out, rec2) == 0 and rec2.calls == []
    assert capsys.readouterr().out.count("skipped") == len(order)


def test_a_failure_stops_the_run_and_the_next_run_resumes_there(tmp_path, data, capsys):
    out = tmp_path / "out"
    rec = Recorder(fail="siimcovid-preprocess")
    assert _run(data, out, rec) == 1
    assert [c["slug"] for c in rec.calls] == ["siimcovid-wheels", "siimcovid-preprocess"]
    text = capsys.readouterr().out
    assert "FAILED" in text and "ValueError: boom" in text
    assert not (out / "siimcovid-preprocess" / L.DONE).exists()
    rec = Recorder()
    assert _run(data, out, rec) == 0
    assert [c["slug"] for c in rec.calls][0] == "siimcovid-preprocess"


def test_a_rerun_upstream_reruns_what_reads_it(tmp_path, data):
    out = tmp_path / "out"
    assert _run(data, out, Recorder()) == 0
    (out / FOLDS[0] / L.DONE).unlink()  # e.g. the user wants this fold again
    rec = Recorder()
    assert _run(data, out, rec) == 0
    assert [c["slug"] for c in rec.calls] == [FOLDS[0], "siimcovid-inference"]


def test_only_needs_its_inputs_to_have_run(tmp_path, data):
    with pytest.raises(UserError, match="run it first"):
        _run(data, tmp_path / "out", Recorder(), "--only", "inference")
    with pytest.raises(UserError, match="local config 'nope' not found .*demo, full, tiny"):
        L.cli(["--data", str(data), "--out", str(tmp_path), "--profile", "nope"], executor=Recorder())


def test_param_adds_to_the_profile(tmp_path, data):
    rec = Recorder()
    assert _run(data, tmp_path / "out", rec, "--only", "wheels", "--param", "wheels.build_mmcv=true",
                "--param", "wheels.out_dir=x") == 0
    assert rec.calls[0]["params"] == {"dry_run": True, "build_mmcv": True, "require_cuda": False, "out_dir": "x"}
    with pytest.raises(UserError, match="STAGE.KEY=VALUE"):
        _run(data, tmp_path / "out", rec, "--param", "sizes=[1]")


def test_a_profile_file_is_a_variant_of_configs_local(tmp_path, data):
    mine = tmp_path / "mine.yaml"
    mine.write_text("_base_: %s\nparams: {wheels: {dry_run: false}}\n" % (L.variants.stage_dir("local") / "tiny.yaml"))
    profile = L.load_profile(str(mine))  # _base_ chains like every other config
    assert profile["name"] == "mine" and profile["repeat"]["train-study-fold"] == {"fold": [0, 1]}
    # mappings merge key by key over the base's
    assert profile["params"]["wheels"] == {"dry_run": False, "build_mmcv": False, "require_cuda": False}
    assert profile["params"]["preprocess"]["sizes"] == [64, 128]
    (tmp_path / "typo.yaml").write_text("repet: {}\n")
    with pytest.raises(UserError, match=r"typo\.yaml: unknown local config key 'repet' \(did you mean 'repeat'"):
        L.cli(["--data", str(data), "--out", str(tmp_path), "--profile", str(tmp_path / "typo.yaml")],
              executor=Recorder())


def test_the_wheels_notebook_runs_under_papermill(tmp_path, data):
    """The cheapest notebook for real: the kernel starts in OUT/<slug>, writes under work/."""
    out = tmp_path / "out"
    assert L.cli(["--data", str(data), "--out", str(out), "--profile", "tiny", "--only", "wheels"]) == 0
    marker = out / "siimcovid-wheels" / "work" / "wheels" / "siimcovid-wheels.txt"
    assert marker.exists() and "mmcv" not in marker.read_text()  # tiny profile: no mmcv build
    assert (out / "siimcovid-wheels" / "wheels.ipynb").exists()


def test_collect_merges_kernel_outputs(tmp_path):
    inp = tmp_path / "input" / "notebooks" / "u"
    for k in (0, 1):
        d = inp / f"fold-{k}" / "exp" / f"fold{k}"
        d.mkdir(parents=True)
        (d / "w.h5").write_text(f"w{k}")
        (inp / f"fold-{k}" / "__notebook__.ipynb").write_text("{}")
        (inp / f"fold-{k}" / "run.json").write_text(f"run {k}")  # same name, other content: a conflict
    assert [p.name for p in kernel_outputs(tmp_path / "input")] == ["fold-0", "fold-1"]
    s = collect(tmp_path / "out", kernel_outputs(tmp_path / "input"))
    out = tmp_path / "out"
    assert (out / "exp" / "fold0" / "w.h5").read_text() == "w0" and (out / "exp" / "fold1" / "w.h5").exists()
    assert not (out / "__notebook__.ipynb").exists()
    assert s["conflicts"] == ["run.json"] and (out / "_conflicts" / "fold-1" / "run.json").read_text() == "run 1"
    assert json.loads((out / "collect.json").read_text())["files"] == s["files"] == 4


class SlowRecorder(Recorder):
    """A Recorder that takes a moment and notes how many calls overlap."""

    def __init__(self, fail: str | None = None):
        import threading

        super().__init__(fail)
        self.lock, self.now, self.most, self.log = threading.Lock(), 0, 0, []

    def __call__(self, notebook, output, parameters, cwd, env):
        import time

        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.log.append(("start", cwd.name))
        try:
            time.sleep(0.05)
            super().__call__(notebook, output, parameters, cwd, env)
        finally:
            with self.lock:
                self.now -= 1
                self.log.append(("end", cwd.name))


def test_jobs_run_independent_kernels_at_once_and_never_before_their_inputs(tmp_path, data, capsys):
    from siimcovid.kaggle import graph as G

    out, rec = tmp_path / "out", SlowRecorder()
    assert _run(data, out, rec, "--jobs", "2") == 0
    assert rec.most == 2  # the fold kernels overlapped
    ended = {}
    for i, (what, slug) in enumerate(rec.log):
        if what == "end":
            ended[slug] = i
    graph = G.build("local", repeat=L.load_profile("tiny")["repeat"])
    for i, (what, slug) in enumerate(rec.log):
        if what == "start":
            assert all(ended[u] < i for u in graph.nodes[slug].upstream), slug  # its inputs had finished
    for c in rec.calls:  # each of two jobs gets half the cores
        assert c["env"]["OMP_NUM_THREADS"] == c["env"]["TF_NUM_INTRAOP_THREADS"] == str(max(1, os.cpu_count() // 2))
    text = capsys.readouterr().out
    assert text.count(": done in") == len(rec.calls) == len(graph.nodes)
    rec2 = SlowRecorder()
    assert _run(data, out, rec2, "--jobs", "2") == 0 and rec2.calls == []  # resumable as with one job


def test_with_jobs_a_failure_lets_the_running_finish_and_starts_nothing_new(tmp_path, data, capsys):
    out = tmp_path / "out"
    rec = SlowRecorder(fail=FOLDS[0])
    assert _run(data, out, rec, "--jobs", "2") == 1
    slugs = [c["slug"] for c in rec.calls]
    assert "siimcovid-inference" not in slugs and FOLDS[0] in slugs
    assert all((out / s / L.DONE).exists() for s in slugs if s != FOLDS[0])  # the others finished and count
    assert "FAILED" in capsys.readouterr().out
    rec = SlowRecorder()
    assert _run(data, out, rec, "--jobs", "2") == 0
    assert FOLDS[0] in [c["slug"] for c in rec.calls] and rec.calls[-1]["slug"] == "siimcovid-inference"
    with pytest.raises(UserError, match="--jobs"):
        _run(data, out, Recorder(), "--jobs", "0")


def test_the_wheels_notebook_runs_in_its_own_process(tmp_path, data):
    """--jobs > 1 runs papermill as a subprocess with its log beside the executed notebook."""
    out = tmp_path / "out"
    assert L.cli(["--data", str(data), "--out", str(out), "--profile", "tiny", "--only", "wheels",
                  "--jobs", "2"]) == 0
    assert (out / "siimcovid-wheels" / "work" / "wheels" / "siimcovid-wheels.txt").exists()
    assert (out / "siimcovid-wheels" / "wheels.log").exists()


def test_subprocess_executor_passes_parameters_with_their_types(tmp_path, monkeypatch):
    """Parameters reach the notebook as the values they are (1e-05 a float, "yes" a string)."""
    import subprocess

    seen = {}

    def fake_run(cmd, env, stdout, stderr):
        import yaml

        seen["params"] = yaml.safe_load(cmd[cmd.index("-y") + 1])  # how papermill reads -y
        seen["env"] = env
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    params = {"lr": 1e-05, "flag": "yes", "sizes": [64, 128], "over": {"a": None, "b": True}, "s": "0.5"}
    L.subprocess_executor(Path("nb.ipynb"), tmp_path / "out.ipynb", params, tmp_path, {"OMP_NUM_THREADS": "1"})
    assert seen["params"] == params and seen["env"]["OMP_NUM_THREADS"] == "1"


def test_include_adds_the_optional_stages_and_inputs_stand_in_for_other_sources(tmp_path, data, capsys):
    """--include preprocess-external pretrain-det: RSNA / CheXpert stand-ins mount where Kaggle mounts
    their handles, a source without one is named, the detector folds read pretrain-det with init_from."""
    from siimcovid.dev.external_sets import write_inputs

    inputs = tmp_path / "inputs"
    write_inputs(inputs, {"rsna": 2}, fixtures=False)
    out, rec = tmp_path / "out", Recorder()
    assert _run(data, out, rec, "--include", "preprocess-external", "pretrain-det", "--inputs", str(inputs)) == 0
    by = {c["slug"]: c for c in rec.calls}
    ext = by["siimcovid-preprocess-external"]
    rsna = "competitions/rsna-pneumonia-detection-challenge"
    assert ext["mounted"][rsna] == (inputs / rsna).resolve()
    assert "competitions/siim-covid19-detection" not in ext["mounted"]  # another competition is not SIIM's data
    assert "vinbigdata-chest-xray-abnormalities-detection" in capsys.readouterr().out  # named: no stand-in
    det = [c for s, c in by.items() if s.startswith("siimcovid-train-det")]
    assert det and all(c["params"]["init_from"] == "pretrain-det" for c in det)
    assert all("notebooks/local/siimcovid-pretrain-det" in c["mounted"] for c in det)
    assert by["siimcovid-pretrain-det"]["params"]["config"] == "tiny_cpu"
    # without --include the profile's params of the optional stages are not an error, and nothing reads them
    rec2 = Recorder()
    assert _run(data, tmp_path / "plain", rec2) == 0
    assert not any("pretrain" in c["slug"] or "init_from" in c["params"] for c in rec2.calls)
