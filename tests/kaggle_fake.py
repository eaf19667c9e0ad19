"""A stand-in for the ``kaggle`` command (kaggle 2.2.5's output formats), installed on PATH by the
orchestrate tests. Its world lives in the JSON file named by $FAKE_KAGGLE_WORLD: every call is
appended to ``calls``; kernel versions advance one status script step per status poll.

Scenario keys (``world["scenario"]``):
  script: {slug: [statuses]} (default RUNNING, COMPLETE), one step per poll of a version;
  stale_polls: the first N polls of a new version still answer the previous version's last status;
  existing: {slug: n}: versions that exist (COMPLETE) before the test;
  refuse: [slug]: push prints a server refusal with exit status 0;
  dataset_exists: bool; echo_secret: print $KAGGLE_KEY in status output and logs;
  drop: {slug: {key: [source]}}: the server stores the push without those sources (what
    `kernels pull -m` then serves), as it does for a handle it cannot resolve.
"""
import json
import os
import sys
from pathlib import Path

TERMINAL = ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED")


def main(argv):
    path = Path(os.environ["FAKE_KAGGLE_WORLD"])
    world = json.loads(path.read_text())
    world["calls"].append(argv)
    sc = world.setdefault("scenario", {})
    kernels = world.setdefault("kernels", {})
    for slug, n in sc.get("existing", {}).items():
        kid = f"{sc.get('user', 'alice')}/{slug}"
        if kid not in kernels:
            kernels[kid] = {"versions": [{"n": i + 1, "polls": 0, "script": ["COMPLETE"], "done": True}
                                         for i in range(n)], "cls": "cpu"}
    secret = os.environ.get("KAGGLE_KEY", "") if sc.get("echo_secret") else ""
    rc = 0
    out = []

    def active(cls):
        return sum(1 for k in kernels.values() for v in k["versions"] if k["cls"] == cls and not v["done"])

    group, cmd = argv[0], argv[1]
    if group == "kernels" and cmd == "push":
        folder = Path(argv[argv.index("-p") + 1])
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        assert (folder / meta["code_file"]).is_file()
        kid, slug = meta["id"], meta["id"].split("/")[1]
        acc = argv[argv.index("--accelerator") + 1] if "--accelerator" in argv else None
        world.setdefault("pushes", []).append({"id": kid, "meta": meta, "accelerator": acc})
        if slug in sc.get("refuse", []):
            out.append("Kernel push error: Notebook not found or invalid kernel sources")
        else:
            cls = "tpu" if meta.get("enable_tpu") else "gpu" if meta.get("enable_gpu") else "cpu"
            k = kernels.setdefault(kid, {"versions": [], "cls": cls})
            k["cls"] = cls
            n = len(k["versions"]) + 1
            script = sc.get("script", {}).get(slug, ["RUNNING", "COMPLETE"])
            k["versions"].append({"n": n, "polls": 0, "script": script, "done": False})
            peak = world.setdefault("peak", {})
            peak[cls] = max(peak.get(cls, 0), active(cls))
            out.append(f"Kernel version {n} successfully pushed.  Please check progress at "
                       f"https://www.kaggle.com/code/{kid}")
    elif group == "kernels" and cmd in ("status", "output"):
        ref = argv[2]
        parts = ref.split("/")
        kid = "/".join(parts[:2])
        k = kernels.get(kid)
        if not k or not k["versions"]:
            out.append("404 Client Error: Not Found")
            rc = 1
        else:
            v = k["versions"][int(parts[2]) - 1] if len(parts) > 2 else k["versions"][-1]
            if cmd == "status":
                v["polls"] += 1
                stale = sc.get("stale_polls", 0)
                prev = k["versions"][v["n"] - 2] if v["n"] > 1 else None
                if prev is not None and v["polls"] <= stale:
                    status = prev["script"][-1]
                else:
                    status = v["script"][min(v["polls"] - stale * (prev is not None) - 1, len(v["script"]) - 1)]
                    v["done"] = v["done"] or status in TERMINAL
                out.append(f'{kid} has status "KernelWorkerStatus.{status}"')
                if status == "ERROR":
                    out.append(f'Failure message: "Your notebook hit an exception {secret}"')
            else:
                dest = Path(argv[argv.index("-p") + 1])
                dest.mkdir(parents=True, exist_ok=True)
                if "--file-pattern" not in argv:
                    (dest / "result.txt").write_text(f"{kid} v{v['n']}\n")
                    (dest / "sub").mkdir(exist_ok=True)
                    (dest / "sub" / "nested.txt").write_text("x\n")
                failed = v["script"][-1] == "ERROR"
                events = [{"stream_name": "stdout", "time": i, "data": f"line {i}\n"} for i in range(50)]
                if failed:
                    events.append({"stream_name": "stderr", "time": 51,
                                   "data": f"Traceback (most recent call last):\nValueError: boom {secret}\n"})
                (dest / f"{kid.split('/')[1]}.log").write_text(json.dumps(events))
                out.append(f"Output file downloaded to {dest}/result.txt")
    elif group == "kernels" and cmd == "pull":
        kid = argv[2]
        dest = Path(argv[argv.index("-p") + 1])
        stored = [p["meta"] for p in world.get("pushes", []) if p["id"] == kid]
        if not stored:
            out.append("404 Client Error: Not Found")
            rc = 1
        else:
            meta = dict(stored[-1])
            for key, gone in sc.get("drop", {}).get(kid.split("/")[1], {}).items():
                meta[key] = [s for s in meta.get(key) or [] if s not in gone]
            dest.mkdir(parents=True, exist_ok=True)
            (dest / meta["code_file"]).write_text("{}")
            if "-m" in argv:
                (dest / "kernel-metadata.json").write_text(json.dumps(meta, indent=2))
            out.append(f"Source code and metadata downloaded to {dest}")
    elif group == "datasets" and cmd == "status":
        if sc.get("dataset_exists"):
            out.append("ready")
        else:
            out.append("404 Client Error: Not Found for url")
            rc = 1
    elif group == "datasets" and cmd in ("create", "version"):
        assert argv[argv.index("-r") + 1] == "zip"
        sc["dataset_exists"] = True
        out.append("Your private Dataset is being created. Please check progress at https://www.kaggle.com/x")
    else:
        out.append(f"fake kaggle: unsupported {argv}")
        rc = 2
    path.write_text(json.dumps(world))
    print("\n".join(out))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
