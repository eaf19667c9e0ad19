"""The kernel graph (templates -> kernels, edges, fan-in, validation) and the Kaggle flow driven
through a fake ``kaggle`` command on PATH (tests/kaggle_fake.py): order, waiting on the pushed
version, errors with the log tail, refusals, dry run, resume, session limits, secrets, pull."""
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from siimcovid.errors import UserError
from siimcovid.kaggle import graph as G
from siimcovid.kaggle.cli import cli_kaggle
from siimcovid.kaggle.client import log_text, parse_push, parse_status, KaggleError

SECRET = "s3cr3t-api-key-0123456789"
FOLDS = [f"siimcovid-train-study-fold-{k}" for k in range(5)]
BINARY = [f"siimcovid-train-binary-fold-{k}" for k in range(5)]


# ------------------------------------------------------------------------------------------ graph
@pytest.fixture(scope="module")
def graph():
    return G.build("alice")


def test_graph_order_and_generated_sources(graph):
    order = [n.slug for n in graph.order()]
    assert order.index("siimcovid-wheels") < order.index("siimcovid-preprocess") < min(order.index(f) for f in FOLDS)
    assert max(order.index(f) for f in FOLDS) < order.index("siimcovid-inference") == len(order) - 1
    by = graph.nodes
    assert by["siimcovid-preprocess"].kernel.metadata["kernel_sources"] == ["alice/siimcovid-wheels"]
    assert set(by["siimcovid-inference"].kernel.metadata["kernel_sources"]) == {
        "alice/siimcovid-wheels", "alice/siimcovid-preprocess", *(f"alice/{f}" for f in FOLDS + BINARY),
        *(f"alice/siimcovid-train-det-r1-fold-{k}" for k in range(5))}  # the ensemble's detector members
    assert by[BINARY[3]].kernel.metadata["kernel_sources"] == ["alice/siimcovid-wheels", "alice/siimcovid-preprocess",
                                                                "alice/siimcovid-weights"]
    assert by["siimcovid-wheels"].kernel.metadata["kernel_sources"] == []
    assert [n.slug for n in graph.sinks()] == ["siimcovid-inference"]  # every fold kernel feeds the ensemble
    assert G.check(graph) == ([], [])
    assert graph.downstream({"siimcovid-train-study-fold-2"}) == {"siimcovid-train-study-fold-2", "siimcovid-inference"}


def test_plan_renders_every_kernel_without_graph_keys(tmp_path, capsys):
    assert cli_kaggle(["plan", "--user", "alice", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "train-study-fold" in text and "siimcovid-train-study-fold-{0,1,2,3,4}" in text
    for d in (tmp_path / "kernels").iterdir():
        meta = json.loads((d / "kernel-metadata.json").read_text())
        assert "needs" not in meta and "_render" not in meta
        assert isinstance(meta["enable_internet"], bool) and meta["enable_internet"] is (d.name in ("siimcovid-wheels", "siimcovid-weights"))
        assert (d / meta["code_file"]).is_file()
    nb = json.loads((tmp_path / "kernels" / "siimcovid-train-study-fold-3" / "train-study.ipynb").read_text())
    assert "fold = 3" in "".join("".join(c["source"]) for c in nb["cells"])


def _templates(tmp_path, extra: dict) -> Path:
    d = tmp_path / "meta"
    d.mkdir()
    base = {"language": "python", "kernel_type": "notebook", "is_private": True, "enable_gpu": False,
            "enable_tpu": False, "enable_internet": False, "dataset_sources": ["{user}/siimcovid-utils"],
            "competition_sources": [], "kernel_sources": [], "model_sources": [], "keywords": []}
    for name, t in extra.items():
        tpl = {**base, "id": f"{{user}}/xtest-{name}", "title": f"xtest {name}", "code_file": "wheels.ipynb",
               **{k: v for k, v in t.items() if k != "_render"}}
        tpl["_render"] = {"notebook": "notebooks/wheels.ipynb", **t.get("_render", {})}
        (d / f"{name}.json").write_text(json.dumps(tpl))
    return d


def test_needs_with_match_selects_by_repeat_values(tmp_path):
    d = _templates(tmp_path, {
        "a": {"_render": {"repeat": {"fold": [0, 1]}}, "id": "{user}/xtest-a-{fold}", "title": "xtest a {fold}"},
        "b": {"_render": {"repeat": {"fold": [0, 1]}, "needs": [{"stage": "a", "match": {"fold": "{fold}"}}]},
              "id": "{user}/xtest-b-{fold}", "title": "xtest b {fold}"},
        "c": {"needs": ["b"]},  # top-level key: accepted and stripped
    })
    g = G.build("bob", meta_dir=d)
    assert g.nodes["xtest-b-1"].upstream == ["xtest-a-1"]
    assert g.nodes["xtest-c"].kernel.metadata["kernel_sources"] == ["bob/xtest-b-0", "bob/xtest-b-1"]
    assert "needs" not in g.nodes["xtest-c"].kernel.metadata
    assert G.check(g) == ([], [])
    assert g.stages() == ["a", "b", "c"]


@pytest.mark.parametrize("extra, match", [
    ({"a": {"_render": {"needs": ["nope"]}}}, "unknown stage 'nope'"),
    ({"a": {"_render": {"needs": ["b"]}}, "b": {"_render": {"needs": ["a"]}}}, "cycle"),
    ({"a": {"_render": {"needs": [{"stage": "b", "match": {"fold": 9}}]}}, "b": {}}, "matches no kernel"),
])
def test_bad_needs_are_user_errors(tmp_path, extra, match):
    with pytest.raises(UserError, match=match):
        G.build("bob", meta_dir=_templates(tmp_path, extra))


def test_hand_written_sources_are_replaced_and_reported(tmp_path):
    d = _templates(tmp_path, {"a": {}, "b": {"_render": {"needs": ["a"]}, "kernel_sources": ["{user}/other"]}})
    g = G.build("bob", meta_dir=d)
    assert g.nodes["xtest-b"].kernel.metadata["kernel_sources"] == ["bob/xtest-a"]
    assert any("b.json" in n and "replaced" in n for n in g.notes)


def test_fan_in_goes_through_a_collect_kernel(tmp_path):
    g = G.build("alice", max_fan_in=5)  # wheels, preprocess + one collector per fold stage (study, binary, det)
    c = g.nodes["siimcovid-collect-train-study-fold"]
    assert c.upstream == FOLDS and c.kernel.metadata["enable_internet"] is False
    inf = g.nodes["siimcovid-inference"]
    assert len(inf.upstream) <= 5 and "siimcovid-collect-train-study-fold" in inf.upstream
    assert not set(FOLDS) & set(inf.upstream)
    assert [n.slug for n in g.order()].index(c.slug) < [n.slug for n in g.order()].index(inf.slug)
    G.render(g, tmp_path)
    assert G.check(g, tmp_path) == ([], [])
    with pytest.raises(UserError, match="raise --max-fan-in"):
        G.build("alice", max_fan_in=1)


def test_check_finds_what_kaggle_refuses(graph, tmp_path):
    import copy

    node = copy.deepcopy(graph.nodes["siimcovid-preprocess"])
    m = node.kernel.metadata
    m.update(id="alice/Bad Slug", title="abc", language="julia", kernel_type="app",
             model_sources=["google/efficientnet-v2/tensorFlow2/x"], kernel_sources=["a/b/c/d"])
    del m["enable_internet"]
    errors, _ = G.check_kernel(node, tmp_path)
    text = " ".join(errors)
    for needle in ("owner/slug", "shorter than 5", "language", "kernel_type", "model_sources", "kernel_sources",
                   "enable_internet", "code_file"):
        assert needle in text, needle
    node = copy.deepcopy(graph.nodes["siimcovid-preprocess"])
    node.kernel.metadata["title"] = "something else entirely"
    errors, warnings = G.check_kernel(node)
    assert not errors and any("slugifies" in w for w in warnings)


def test_budget_warning_for_the_inference_kernel(graph):
    assert G.budget_warnings(graph, None) == []
    assert G.budget_warnings(graph, {"train-study-fold": 0.1}) == []  # 5 x 0.1 s x 6334 = 53 min
    w = G.budget_warnings(graph, {"train-study-fold": 1.0})  # 8.8 h
    assert len(w) == 1 and "siimcovid-inference" in w[0]


# ------------------------------------------------------------------------------- client parsing
def test_client_reads_kaggle_output():
    assert parse_push("Kernel version 7 successfully pushed.  Please check progress at https://x") == 7
    with pytest.raises(KaggleError, match="refused"):
        parse_push("Kernel push error: Invalid kernel sources")
    with pytest.raises(KaggleError, match="refused"):
        parse_push("The following are not valid kernel sources and could not be added to the kernel: ['a/b']\n"
                   "Kernel version 2 successfully pushed.  Please check progress at https://x")
    assert parse_status('a/b has status "KernelWorkerStatus.RUNNING"') == ("RUNNING", "")
    assert parse_status('a/b has status "complete"') == ("COMPLETE", "")
    assert parse_status('a/b has status "KernelWorkerStatus.ERROR"\nFailure message: "oom"') == ("ERROR", "oom")
    assert log_text(json.dumps([{"data": "a\n"}, {"data": "b\n"}])) == "a\nb\n"


# ------------------------------------------------------------------------------- push with a fake
class FakeTime:
    def __init__(self):
        self.t = 1_800_000_000.0
        self.sleeps = []

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s

    def clock(self):
        return self.t


SMALL = {  # the pipeline's shape in four stages, five kernels: fast to push through the fake
    "w": {"enable_internet": True},
    "p": {"_render": {"needs": ["w"]}},
    "f": {"_render": {"needs": ["w", "p"], "repeat": {"fold": [0, 1]}, "accelerators": ["NvidiaTeslaT4"]},
          "id": "{user}/xtest-f-{fold}",
          "title": "xtest f {fold}", "enable_tpu": True},
    "i": {"_render": {"needs": ["p", "f"]}, "enable_gpu": True},
}
SMALL_FOLDS = ["xtest-f-0", "xtest-f-1"]


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "kaggle"
    exe.write_text(f"#!{sys.executable} -S\n" + (Path(__file__).parent / "kaggle_fake.py").read_text())
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"calls": [], "scenario": {}}))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KAGGLE_WORLD", str(world))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kaggle of the machine's user
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)

    class Fake:
        out = tmp_path / "out"

        def scenario(self, **kw):
            w = json.loads(world.read_text())
            w["scenario"].update(kw)
            world.write_text(json.dumps(w))

        def world(self):
            return json.loads(world.read_text())

        def calls(self):
            return self.world()["calls"]

        templates = None  # None: the repository's kernel-metadata/

        def small(self):
            self.templates = str(_templates(tmp_path, SMALL))
            return self

        def args(self, cmd, *extra):
            t = ["--templates", self.templates] if self.templates else []
            return [cmd, "--user", "alice", "--out", str(self.out), *t, *extra]

        def push(self, *extra):
            t = FakeTime()
            # a quota no graph reaches: these tests are about order and state (the quota's own test
            # passes --quota-hours again; argparse keeps the last)
            return cli_kaggle(self.args("push", "--quota-hours", "100000", *extra), sleep=t.sleep, clock=t.clock)

    return Fake()


def _pushed(calls):
    return [json.loads((Path(c[3]) / "kernel-metadata.json").read_text())["id"].split("/")[1]
            for c in calls if c[:2] == ["kernels", "push"]]


def test_push_runs_the_graph_in_order_waiting_for_each_version(fake, capsys):
    fake.scenario(existing={"siimcovid-wheels": 3}, stale_polls=2)
    assert fake.push() == 0
    calls = fake.calls()
    assert calls[0][:2] == ["datasets", "status"] and calls[1][:2] == ["datasets", "create"]
    assert "zip" in calls[1]
    pushed = _pushed(calls)
    assert pushed[0] == "siimcovid-wheels" and pushed[1] == "siimcovid-preprocess" and pushed[-1] == "siimcovid-inference"
    assert set(BINARY + FOLDS) <= set(pushed[2:-1]) and len(pushed) == len(G.build("alice").nodes)
    # waited for the version it pushed: wheels v4 (3 existed), asked by version, through 2 stale answers
    i_pre = next(i for i, c in enumerate(calls) if c[:2] == ["kernels", "push"] and "siimcovid-preprocess" in c[3])
    wheel_polls = [c for c in calls[:i_pre] if c[:2] == ["kernels", "status"]]
    assert wheel_polls and all(c[2] == "alice/siimcovid-wheels/4" for c in wheel_polls)
    assert len(wheel_polls) >= 2 + 2  # stale, stale, RUNNING, COMPLETE
    state = json.loads((fake.out / "state.json").read_text())
    assert state["kernels"]["siimcovid-wheels"]["version"] == 4
    assert all(k["status"] == "complete" for k in state["kernels"].values()) and len(state["kernels"]) == len(pushed)
    assert state["kernels"]["siimcovid-preprocess"]["upstream"] == {"siimcovid-wheels": 4}
    pushes = fake.world()["pushes"]
    inf = next(p for p in pushes if p["id"] == "alice/siimcovid-inference")["meta"]
    assert set(inf["kernel_sources"]) >= {f"alice/{f}" for f in FOLDS}
    out = capsys.readouterr().out
    assert "COMPLETE" in out
    assert "kaggle competitions submit siim-covid19-detection -k alice/siimcovid-inference -v 1" in out


def test_a_failed_kernel_stops_the_run_with_its_log_tail(fake, capsys):
    fake.small().scenario(script={"xtest-p": ["RUNNING", "ERROR"]})
    assert fake.push() == 1
    out = capsys.readouterr().out
    assert "ValueError: boom" in out and "line 49" in out and "line 5\n" not in out  # the tail only
    assert _pushed(fake.calls()) == ["xtest-w", "xtest-p"]
    state = json.loads((fake.out / "state.json").read_text())
    assert state["kernels"]["xtest-p"]["status"] == "error"
    assert state["kernels"]["xtest-w"]["status"] == "complete"

    # resume after the fix: the finished kernel is kept, the failed one is pushed again
    fake.scenario(script={})
    n_calls = len(fake.calls())
    assert fake.push() == 0
    again = _pushed(fake.calls()[n_calls:])
    assert "xtest-w" not in again and again[0] == "xtest-p" and again[-1] == "xtest-i"
    assert not [c for c in fake.calls()[n_calls:] if c[:2] == ["datasets", "create"]]  # dataset unchanged


def test_a_refused_push_is_an_error_even_with_exit_status_0(fake, capsys):
    fake.small().scenario(refuse=["xtest-p"])
    assert fake.push() == 1
    out = capsys.readouterr().out
    assert "xtest-p was not pushed" in out and "invalid kernel sources" in out
    assert _pushed(fake.calls()) == ["xtest-w", "xtest-p"]


def test_dropped_sources_compares_every_source_kind():
    from siimcovid.kaggle.client import dropped_sources

    pushed = {"dataset_sources": ["a/utils"], "competition_sources": ["siim-covid19-detection"],
              "kernel_sources": ["a/pre", "a/fold-0"], "model_sources": ["google/effnet/tensorFlow2/l/2"]}
    assert dropped_sources(pushed, {**pushed, "model_sources": ["Google/EffNet/tensorFlow2/l/2"]}) == []
    assert dropped_sources(pushed, {**pushed, "model_sources": [], "kernel_sources": ["a/pre"]}) == [
        "kernel_sources a/fold-0", "model_sources google/effnet/tensorFlow2/l/2"]


def test_a_source_the_server_dropped_stops_the_run_naming_kernel_and_source(fake, capsys, tmp_path):
    """kernels push prints no refusal for a model handle: the read-back (kernels pull -m) catches it."""
    model = "google/efficientnet-v2/tensorFlow2/imagenet21k-ft1k-l-feature-vector/2"
    small = {**SMALL, "i": {**SMALL["i"], "model_sources": [model]}}
    (tmp_path / "t").mkdir()
    fake.templates = str(_templates(tmp_path / "t", small))
    fake.scenario(drop={"xtest-i": {"model_sources": [model]}})
    assert fake.push() == 1
    out = capsys.readouterr().out
    assert "stopped: xtest-i was not pushed: alice/xtest-i: Kaggle dropped 1 source(s)" in out
    assert f"model_sources {model}" in out
    pulls = [c for c in fake.calls() if c[:2] == ["kernels", "pull"]]
    assert all("-m" in c for c in pulls) and {c[2] for c in pulls} == {
        "alice/xtest-w", "alice/xtest-p", "alice/xtest-f-0", "alice/xtest-f-1", "alice/xtest-i"}
    state = json.loads((fake.out / "state.json").read_text())
    assert state["kernels"]["xtest-i"]["status"] == "error" and "model_sources" in state["kernels"]["xtest-i"]["message"]
    # a dropped kernel source (an upstream fold) is caught the same way, naming the kernel that reads it
    fake.scenario(drop={"xtest-i": {"kernel_sources": ["alice/xtest-f-1"]}})
    assert fake.push() == 1
    assert "alice/xtest-i: Kaggle dropped 1 source(s) of the pushed metadata: kernel_sources alice/xtest-f-1" in \
        capsys.readouterr().out


def test_dry_run_calls_nothing(fake, capsys):
    assert fake.push("--dry-run") == 0
    assert fake.calls() == []
    out = capsys.readouterr().out
    assert "would upload" in out and out.count("] push") == len(G.build("alice").nodes)


def test_push_over_the_weekly_quota_stops_before_anything_with_what_to_cut(fake, capsys):
    from siimcovid import costs

    total = costs.plan([(n.slug, n.stage, n.session_class) for n in G.build("alice").order()],
                       costs.read_measured()).gpu_hours
    assert fake.push("--quota-hours", f"{total / 2:.1f}") == 1
    assert fake.calls() == []  # no upload, no push, not even the credentials' check against Kaggle
    out = capsys.readouterr().out
    assert "stopped: the graph is projected at" in out and "To fit:" in out and "drop " in out
    assert not (fake.out / "state.json").exists() or not json.loads((fake.out / "state.json").read_text()).get("kernels")
    # a stage alone fits: the week's push goes through
    assert fake.push("--quota-hours", f"{total / 2:.1f}", "--only", "siimcovid-wheels") == 0
    # next week: what completed is not counted again, so the rest fits a quota the whole graph does not
    wheels = costs.plan([("siimcovid-wheels", "wheels", "gpu")], costs.read_measured()).gpu_hours
    assert wheels > 0
    capsys.readouterr()
    assert fake.push("--quota-hours", f"{total - wheels / 2:.2f}") == 0
    assert "stopped:" not in capsys.readouterr().out


def test_resume_waits_for_a_version_pushed_before_an_interrupt(fake):
    fake.small()
    t = FakeTime()
    calls = {"n": 0}

    def sleep_then_interrupt(s):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        t.sleep(s)

    with pytest.raises(KeyboardInterrupt):
        cli_kaggle(fake.args("push"), sleep=sleep_then_interrupt, clock=t.clock)
    state = json.loads((fake.out / "state.json").read_text())
    assert state["kernels"]["xtest-w"]["status"] in ("pushed", "running")
    assert fake.push() == 0
    assert _pushed(fake.calls()).count("xtest-w") == 1  # waited for, not pushed again


def test_from_stage_re_pushes_it_and_what_reads_it(fake, capsys):
    assert fake.small().push() == 0
    n = len(fake.calls())
    assert fake.push("--from", "f") == 0
    assert sorted(_pushed(fake.calls()[n:])) == SMALL_FOLDS + ["xtest-i"]
    n = len(fake.calls())
    assert fake.push() == 0 and _pushed(fake.calls()[n:]) == []  # everything up to date
    capsys.readouterr()
    assert fake.push("--dry-run", "--from", "f") == 0
    out = capsys.readouterr().out
    assert out.count("] push") == 3 and out.count("read as is (complete, v1)") == 2  # w, p
    assert fake.push("--only", "xtest-i", "--from", "p") == 0
    assert _pushed(fake.calls()[n:]) == ["xtest-i"]


def test_session_limits_are_respected(fake):
    assert fake.small().push() == 0
    assert fake.world()["peak"]["tpu"] == 1  # the fold kernels ask for a TPU: one at a time by default
    fake.out = fake.out.parent / "out2"
    assert fake.push("--max-sessions", "tpu=2") == 0
    assert fake.world()["peak"]["tpu"] == 2


def test_accelerator_applies_to_the_kernels_that_offer_it(fake):
    assert fake.small().push("--accelerator", "NvidiaTeslaT4") == 0
    shapes = {p["id"].split("/")[1]: p["meta"].get("machine_shape") for p in fake.world()["pushes"]}
    assert {s for s, a in shapes.items() if a} == set(SMALL_FOLDS) and shapes["xtest-f-0"] == "NvidiaTeslaT4"
    fold = next(p["meta"] for p in fake.world()["pushes"] if p["id"] == "alice/xtest-f-0")
    assert fold["enable_gpu"] is True and fold["enable_tpu"] is False
    assert all(p["accelerator"] is None for p in fake.world()["pushes"])  # the metadata says it
    with pytest.raises(UserError, match="no kernel takes"):
        fake.push("--accelerator", "NvidiaL4")


def test_secrets_never_printed_or_stored(fake, capsys):
    fake.small().scenario(echo_secret=True, script={"xtest-p": ["RUNNING", "ERROR"]})
    assert fake.push() == 1
    captured = capsys.readouterr()
    assert "boom ***" in captured.out  # the log line was shown, masked
    assert SECRET not in captured.out + captured.err
    for p in fake.out.rglob("*.json"):
        assert SECRET not in p.read_text(), p


def test_missing_credentials_fail_before_anything_is_written(fake, monkeypatch):
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    with pytest.raises(UserError, match="credentials"):
        fake.small().push()
    assert fake.calls() == [] and not fake.out.exists()


def test_status_and_pull_only_completed_versions(fake, capsys):
    fake.small().scenario(script={"xtest-f-1": ["RUNNING", "ERROR"]})
    assert fake.push("--max-sessions", "tpu=2") == 1
    capsys.readouterr()
    assert cli_kaggle(fake.args("status")) == 0
    out = capsys.readouterr().out
    assert "v1 error (Kaggle: ERROR" in out and "v1 complete (Kaggle: COMPLETE)" in out
    n = len(fake.calls())
    assert cli_kaggle(fake.args("status", "--offline")) == 0 and len(fake.calls()) == n
    dest = fake.out / "input"
    assert cli_kaggle(fake.args("pull", "--only", "p", "f")) == 1  # fold 1 failed: not pulled
    base = dest / "notebooks" / "alice"
    assert (base / "xtest-p" / "result.txt").read_text() == "alice/xtest-p v1\n"
    assert (base / "xtest-p" / "sub" / "nested.txt").exists()
    assert not (base / "xtest-p" / "xtest-p.log").exists()
    assert "line 49" in (dest / "logs" / "xtest-p.log").read_text()
    assert not (base / "xtest-f-1").exists() and (base / "xtest-f-0").is_dir()
    assert "not pulled" in capsys.readouterr().out


def test_optional_stages_join_the_graph_only_when_included():
    """preprocess-external reads other competitions' data: out of the default graph (plan, push,
    run-local, the rehearsal), in it with --include, after the preprocess kernel it dedupes against."""
    assert "preprocess-external" not in G.build("alice").stages()
    g = G.build("alice", include=["preprocess-external"])
    (node,) = g.by_stage("preprocess-external")
    assert node.kernel.metadata["kernel_sources"] == ["alice/siimcovid-wheels", "alice/siimcovid-preprocess"]
    assert "rsna-pneumonia-detection-challenge" in node.kernel.metadata["competition_sources"]
    assert "optional" not in node.kernel.metadata.get("_render", {})
    with pytest.raises(UserError, match="not optional"):
        G.build("alice", include=["preprocess"])
