"""The push rehearsal (siimcovid.kaggle.rehearse): rendered kernels run with only their listed
inputs, read-only, in Kaggle's layout, without network, on their image's build strings."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from siimcovid.kaggle import graph as G
from siimcovid.kaggle import rehearse as R

BOOT = """import glob, sys
try:
    import siimcovid
except ImportError:
    pats = ["/kaggle/input/" + "*/" * d + "siimcovid/__init__.py" for d in range(1, 5)]
    hits = next((h for h in (sorted(glob.glob(p)) for p in pats) if h), [])
    sys.path.insert(0, hits[0].rsplit("/siimcovid/", 1)[0])
    import siimcovid"""

# a: proves the package came from the mounted utils dataset, that inputs are read-only and the image
# string is the CPU image's; writes its output. b: reads a's output through the package's finder.
NOTEBOOKS = {
    "a": BOOT + """
import importlib.metadata as md, os
from pathlib import Path
assert siimcovid.__file__.startswith("/kaggle/input/datasets/"), siimcovid.__file__
try:
    Path(siimcovid.__file__).with_name("x.txt").write_text("x")
    raise AssertionError("an input was writable")
except OSError:
    pass
Path("/kaggle/working/a.txt").write_text(md.version("torch") + " " + os.getcwd())""",
    "b": BOOT + """
from siimcovid.paths import find_input
print((find_input("a.txt") / "a.txt").read_text())""",
    "hid": BOOT + """
import mmdet  # in no wheel group of a kernel named "hid", and not in the Kaggle image""",
    "net": BOOT + """
import socket
try:
    socket.create_connection(("127.0.0.2", 9), timeout=1)  # not the notebook's own loopback: counts as network
except OSError:
    pass""",
}


def _templates(tmp_path: Path, needs_b: list[str]) -> Path:
    d = tmp_path / "meta"
    d.mkdir(exist_ok=True)
    for name, src in NOTEBOOKS.items():
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(src)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = tmp_path / f"{name}.ipynb"
        nbformat.write(nb, path)
        tpl = {"language": "python", "kernel_type": "notebook", "is_private": True, "enable_gpu": False,
               "enable_tpu": False, "enable_internet": False, "dataset_sources": ["{user}/siimcovid-utils"],
               "competition_sources": [], "kernel_sources": [], "model_sources": [], "keywords": [],
               "id": f"{{user}}/xr-{name}", "title": f"xr {name}", "code_file": f"{name}.ipynb",
               "_render": {"notebook": str(path), "needs": needs_b if name == "b" else []}}
        (d / f"{name}.json").write_text(json.dumps(tpl))
    return d


def _rehearse(tmp_path: Path, meta: Path, only: set[str]) -> dict:
    graph = G.build("u", meta_dir=meta)
    for slug in [s for s in graph.nodes if s.split("-", 1)[1] not in only]:
        del graph.nodes[slug]
    (tmp_path / "data").mkdir(exist_ok=True)
    out = tmp_path / "out"
    rc = R.Rehearsal(graph, tmp_path / "data", out, {"name": "t", "params": {}, "repeat": {}},
                     timeout=300).run()
    report = json.loads((out / R.REPORT).read_text())
    report["rc"] = rc
    return report


needs_namespaces = pytest.mark.skipif(R.unshare_available() is not None, reason=str(R.unshare_available()))


def test_sources_land_where_kaggle_mounts_them():
    meta = {"competition_sources": ["siim-covid19-detection"], "dataset_sources": ["u/siimcovid-utils"],
            "kernel_sources": ["u/siimcovid-preprocess"], "model_sources": ["google/effv2/tensorFlow2/l/2"]}
    rels = [R.input_rel(k, h) for k, h in R.sources(meta)]
    assert rels == ["competitions/siim-covid19-detection", "datasets/u/siimcovid-utils",
                    "notebooks/u/siimcovid-preprocess", "models/google/effv2/tensorFlow2/l/2"]


def test_members_are_read_from_every_fold_report():
    summary = {"study": {"folds": {"/i/exp/fold0": {"status": "used"}, "/i/exp/fold1": {"status": "skipped",
                                                                                       "reason": "OSError: x"}}},
               "ensemble": {"predict": {"binary:tiny": {"folds": {"/i/b/fold0": {"status": "used"}}}}}}
    rows = R.members_of(summary)
    assert [(r["member"], r["fold"], r["used"]) for r in rows] == [
        ("study", "fold0", True), ("study", "fold1", False), ("binary:tiny", "fold0", True)]
    assert rows[1]["reason"] == "OSError: x"


@needs_namespaces
def test_kernels_see_only_their_listed_inputs_read_only_on_their_image(tmp_path):
    report = _rehearse(tmp_path, _templates(tmp_path, ["a"]), {"a", "b"})
    assert report["rc"] == 0, report["problems"]
    assert [(k["slug"], k["status"]) for k in report["kernels"]] == [("xr-a", "ok"), ("xr-b", "ok")]
    a_out = (tmp_path / "out" / "run" / "xr-a" / "working" / "a.txt").read_text()
    assert a_out.endswith("+cpu /kaggle/working")  # the CPU image's torch build, run from /kaggle/working
    assert "notebooks/u/xr-a" in report["kernels"][1]["inputs"]
    assert report["network"].startswith("off (")


@needs_namespaces
def test_a_kernel_that_lost_an_upstream_fails_by_name(tmp_path):
    report = _rehearse(tmp_path, _templates(tmp_path, []), {"a", "b"})
    assert report["rc"] == 1
    assert [k["status"] for k in report["kernels"]] == ["ok", "failed"]
    assert report["problems"][0].startswith("xr-b: ") and "a.txt" in report["problems"][0]


@needs_namespaces
def test_reaching_for_the_network_fails_even_when_the_notebook_swallows_it(tmp_path):
    report = _rehearse(tmp_path, _templates(tmp_path, []), {"net"})
    assert report["rc"] == 1
    assert report["problems"] == ["xr-net: reached for the network: 127.0.0.2:9"]


def test_a_fold_kernel_inference_did_not_use_fails_naming_inference(tmp_path):
    meta = _templates(tmp_path, [])
    tpl = json.loads((meta / "b.json").read_text())
    (meta / "b.json").unlink()
    tpl.update(id="{user}/xr-inference", title="xr inference")
    (meta / "inference.json").write_text(json.dumps(tpl))
    graph = G.build("u", meta_dir=meta)
    del graph.nodes["xr-net"]
    rh = R.Rehearsal(graph, tmp_path, tmp_path / "out", {"name": "t", "params": {}, "repeat": {}})
    fold = rh.run_dir / "xr-a" / "working" / "exp" / "fold0"
    fold.mkdir(parents=True)
    (fold / "config.json").write_text("{}")
    summary = rh.run_dir / "xr-inference" / "working" / "inference.json"
    summary.parent.mkdir(parents=True)

    def members(path: str) -> list[str]:
        summary.write_text(json.dumps({"study": {"folds": {path: {"status": "used"}}}}))
        rh.report["problems"] = []
        rh._members()
        return rh.report["problems"]

    assert members("/kaggle/input/notebooks/u/xr-a/exp/fold0") == []
    (problem,) = members("/kaggle/input/notebooks/u/xr-other/exp/fold0")
    assert problem.startswith("xr-inference: used none of the 1 fold(s) xr-a trained")


@needs_namespaces
def test_a_package_the_kernels_wheel_groups_do_not_install_is_not_found(tmp_path):
    assert "mmdet" in R.hidden_modules("hid") and "mmdet" not in R.hidden_modules("train-det")
    assert "pydicom" in R.hidden_modules("train-study") and "pydicom" not in R.hidden_modules("preprocess")
    report = _rehearse(tmp_path, _templates(tmp_path, []), {"hid"})
    assert report["rc"] == 1
    assert "No module named 'mmdet'" in report["problems"][0] and report["problems"][0].startswith("xr-hid: ")
