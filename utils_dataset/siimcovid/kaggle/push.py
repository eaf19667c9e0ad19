"""Push the kernel graph to Kaggle, wait for every version it pushed, report, pull the outputs.

Kaggle is the engine: kernels run there side by side (within the concurrent-session limits) and
this process only pushes, polls and records. Waiting is on the VERSION this run pushed: the push
prints its number, status is asked for ``owner/slug/N``, and a finished status read shortly after
a push, before any queued/running one, is not trusted (it can still describe the previous run).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import UserError
from .client import ACTIVE, FAILED, Client, KaggleError, dropped_sources, log_text, tail
from .graph import Graph, Node
from .state import DONE, IN_FLIGHT, State, folder_hash

# Concurrent batch sessions per accelerator. The client relays the server's refusal, which names 5
# for CPU (kaggle-runtime.md); the GPU and TPU figures are assumptions (not verified on Kaggle).
DEFAULT_LIMITS = {"cpu": 5, "gpu": 2, "tpu": 1}


def parse_limits(text: str | None) -> dict[str, int]:
    limits = dict(DEFAULT_LIMITS)
    for part in filter(None, (text or "").split(",")):
        key, _, value = part.partition("=")
        if key.strip() not in limits or not value.strip().isdigit() or int(value) < 1:
            raise UserError(f"--max-sessions {part!r}: use cpu=N,gpu=N,tpu=N with N >= 1")
        limits[key.strip()] = int(value)
    return limits


@dataclass
class Poll:
    first_s: float = 20.0
    factor: float = 1.5
    max_s: float = 300.0
    settle_s: float = 90.0  # a terminal status this soon after a push, never seen active: maybe stale
    max_wait_s: float = 13 * 3600.0  # a Kaggle session stops at 12 h
    max_failures: int = 5  # consecutive failed status calls before giving up
    summary_every_s: float = 600.0


@dataclass
class _Flight:
    node: Node
    version: int
    pushed_at: float
    seen_active: bool = False
    status: str = "PUSHED"
    failures: int = 0
    stale_said: bool = False


@dataclass
class Pusher:
    graph: Graph
    client: Client | None  # None in a dry run: no call at all
    state: State
    kernels_dir: Path
    dataset_dir: Path | None = None
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    poll: Poll = field(default_factory=Poll)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    echo: Callable[[str], None] = print
    log_lines: int = 30

    # ------------------------------------------------------------------------------ planning
    def targets(self, only: list[str] | None, from_stage: str | None) -> tuple[list[Node], set[str]]:
        """(kernels to bring up to date, kernels to re-push whatever their state)."""
        selected = self.graph.select(only)
        forced: set[str] = set()
        if from_stage:
            start = self.graph.select([from_stage])
            forced = self.graph.downstream({n.slug for n in start})
            selected = [n for n in selected if n.slug in forced]
        return selected, forced

    def _hash(self, node: Node) -> str:
        return folder_hash(self.kernels_dir / node.slug)

    def _inputs(self, node: Node) -> dict[str, int | None]:
        return {u: self.state.version(u) for u in node.upstream}

    def _up_to_date(self, node: Node) -> bool:
        st = self.state.kernel(node.slug)
        return (st.get("status") == DONE and st.get("hash") == self._hash(node)
                and st.get("upstream") == self._inputs(node))

    def _in_flight(self, node: Node) -> bool:
        st = self.state.kernel(node.slug)
        return (st.get("status") in IN_FLIGHT and st.get("version") is not None
                and st.get("hash") == self._hash(node) and st.get("upstream") == self._inputs(node))

    def _say(self, msg: str) -> None:
        self.echo(f"{time.strftime('%H:%M:%S', time.gmtime(self.clock()))}  {msg}")

    # ------------------------------------------------------------------------------ run
    def run(self, only: list[str] | None = None, from_stage: str | None = None, dry_run: bool = False) -> int:
        targets, forced = self.targets(only, from_stage)
        wanted = {n.slug for n in targets}
        outside = [self.graph.nodes[u] for n in targets for u in n.upstream if u not in wanted]
        outside = list({n.slug: n for n in outside}.values())
        if dry_run:
            return self._dry_run(targets, forced, outside)
        self._check_outside(outside)
        self._upload_dataset()
        return self._loop(targets, forced)

    def _dry_run(self, targets: list[Node], forced: set[str], outside: list[Node]) -> int:
        self.echo("dry run: nothing is uploaded or pushed")
        if self.dataset_dir is not None:
            same = self.state.data.get("dataset", {}).get("hash") == folder_hash(self.dataset_dir)
            self.echo(f"  dataset {self.dataset_dir.name}: {'unchanged since the last upload' if same else 'would upload (zip)'}")
        for n in outside:
            st = self.state.kernel(n.slug)
            self.echo(f"  {n.slug}: read as is ({st.get('status', 'not pushed by this tool')}"
                      f"{', v' + str(st['version']) if st.get('version') else ''})")
        will_push: set[str] = set()
        for n in targets:
            # a kernel reading one that will be pushed runs again too (its inputs' versions change)
            if (n.slug in forced or any(u in will_push for u in n.upstream)
                    or not (self._up_to_date(n) or self._in_flight(n))):
                will_push.add(n.slug)
                action = f"push ({n.accelerator})"
            elif self._in_flight(n):
                action = f"wait for v{self.state.version(n.slug)} (pushed earlier)"
            else:
                action = f"up to date (v{self.state.version(n.slug)})"
            self.echo(f"  {n.slug:<44} [{n.session_class}] {action}")
        return 0

    def _check_outside(self, outside: list[Node]) -> None:
        """Kernels the selected ones read but that this run does not push must have finished."""
        for n in outside:
            if self.state.is_complete(n.slug):
                continue
            status, _ = self.client.status(n.id)
            if status != "COMPLETE":
                raise UserError(f"{n.slug} (read by the selected kernels) is {status}, not COMPLETE: "
                                "push it first (drop --only / --from)")
            self._say(f"{n.slug}: not pushed by this tool; its latest run is COMPLETE and is read as is")
            self.state.update(n.slug, id=n.id, version=None, status=DONE, hash=None, upstream={})

    def _upload_dataset(self) -> None:
        if self.dataset_dir is None:
            return
        meta_id = self._dataset_id()
        digest = folder_hash(self.dataset_dir)
        if self.state.data.get("dataset", {}).get("hash") == digest:
            self._say(f"dataset {meta_id}: unchanged since the last upload")
            return
        exists = self.client.dataset_status(meta_id) is not None
        self._say(f"dataset {meta_id}: {'new version' if exists else 'creating'} (zip mode)")
        self.client.dataset_upload(self.dataset_dir, exists, "siimcovid kaggle push")
        delay, start = self.poll.first_s, self.clock()
        while True:
            status = self.client.dataset_status(meta_id) or "missing"
            if status == "ready":
                break
            if any(w in status for w in ("error", "fail", "deleted")):  # DatabundleVersionStatus names
                raise KaggleError(f"dataset {meta_id}: {status}")
            if self.clock() - start > 3600:
                raise KaggleError(f"dataset {meta_id}: still {status} after an hour")
            self.sleep(delay)
            delay = min(delay * self.poll.factor, self.poll.max_s)
        self.state.set_dataset(id=meta_id, hash=digest, uploaded_at=self.clock())
        stale = [s for s, k in self.state.kernels.items() if k.get("status") == DONE]
        if stale:
            self._say(f"dataset changed: {len(stale)} finished kernel(s) ran on the previous version; "
                      "`--from STAGE` re-runs a stage and what reads it")

    def _dataset_id(self) -> str:
        import json

        return json.loads((self.dataset_dir / "dataset-metadata.json").read_text())["id"]

    def _loop(self, targets: list[Node], forced: set[str]) -> int:
        pending = list(targets)
        flights: dict[str, _Flight] = {}
        for n in list(pending):  # resume: versions pushed by an earlier run are waited for, not re-pushed
            if n.slug not in forced and self._in_flight(n):
                st = self.state.kernel(n.slug)
                flights[n.slug] = _Flight(n, st["version"], st.get("pushed_at", 0.0))
                pending.remove(n)
                self._say(f"{n.slug}: waiting for v{st['version']} pushed earlier")
        delay = self.poll.first_s
        last_summary = self.clock()
        while pending or flights:
            failed = self._launch(pending, flights, forced)
            if failed:
                return 1
            if not flights:
                if pending:
                    blocked = pending[0]
                    why = {u: self.state.kernel(u).get("status", "not pushed") for u in blocked.upstream
                           if not self.state.is_complete(u)}
                    self._say(f"stopped: {blocked.slug} cannot start, its inputs are not complete: {why}")
                    return 1
                break
            self.sleep(delay)
            changed, failed = self._poll_all(flights)
            if failed:
                return 1
            delay = self.poll.first_s if changed else min(delay * self.poll.factor, self.poll.max_s)
            if changed:
                last_summary = self.clock()
            elif self.clock() - last_summary >= self.poll.summary_every_s:
                last_summary = self.clock()
                now = self.clock()
                self._say("waiting: " + ", ".join(f"{f.node.slug} v{f.version} {f.status} "
                                                  f"{_dur(now - f.pushed_at)}" for f in flights.values()))
        self._say("done: every selected kernel completed" if targets else "nothing selected")
        for n in self.graph.sinks():
            comps = n.kernel.metadata.get("competition_sources") or []
            if n in targets and comps and self.state.version(n.slug):
                self.echo(f"submit: kaggle competitions submit {comps[0]} -k {n.id} -v {self.state.version(n.slug)} "
                          f"-f submission.csv -m siimcovid   (or from the competition page)")
        return 0

    def _launch(self, pending: list[Node], flights: dict[str, _Flight], forced: set[str]) -> bool:
        """Push every pending kernel whose inputs completed, within the session limits.
        Returns True when a push failed (the run stops)."""
        for n in list(pending):
            if not all(self.state.is_complete(u) for u in n.upstream):
                continue
            if n.slug not in forced and self._up_to_date(n):
                pending.remove(n)
                self._say(f"{n.slug}: up to date (v{self.state.version(n.slug)}), skipped")
                continue
            busy = sum(1 for f in flights.values() if f.node.session_class == n.session_class)
            if busy >= self.limits.get(n.session_class, 1):
                continue
            digest, inputs = self._hash(n), self._inputs(n)
            try:
                version = self.client.push(self.kernels_dir / n.slug)
                self._check_stored(n)
            except KaggleError as exc:
                self.state.update(n.slug, id=n.id, status="error", message=str(exc), hash=digest, upstream=inputs)
                self._say(f"stopped: {n.slug} was not pushed: {exc}")
                return True
            now = self.clock()
            self.state.update(n.slug, id=n.id, version=version, status="pushed", hash=digest, upstream=inputs,
                              pushed_at=now, finished_at=None, message="")
            flights[n.slug] = _Flight(n, version, now)
            pending.remove(n)
            self._say(f"{n.slug}: pushed v{version} [{n.session_class}]")
        return False

    def _check_stored(self, n: Node) -> None:
        """Read back what the server stored for the version just pushed: a source it dropped (a
        model handle it could not resolve is dropped without a word) would fail the kernel at run
        time, hours later. -> KaggleError naming the kernel and every dropped source."""
        import json

        pushed = json.loads((self.kernels_dir / n.slug / "kernel-metadata.json").read_text())
        dropped = dropped_sources(pushed, self.client.stored_metadata(n.id))
        if dropped:
            raise KaggleError(f"{n.id}: Kaggle dropped {len(dropped)} source(s) of the pushed metadata: "
                              f"{'; '.join(dropped)} (a wrong handle, or an input this account cannot read): "
                              "fix it in kernel-metadata/ and push again")

    def _poll_all(self, flights: dict[str, _Flight]) -> tuple[bool, bool]:
        changed = False
        for slug, f in list(flights.items()):
            now = self.clock()
            try:
                status, message = self.client.status(f.node.id, f.version)
                f.failures = 0
            except KaggleError as exc:
                f.failures += 1
                self._say(f"{slug}: status call failed ({f.failures}/{self.poll.max_failures}): {exc}")
                if f.failures >= self.poll.max_failures:
                    self._say(f"stopped: no status for {slug} v{f.version}; re-run `kaggle push` to resume waiting")
                    return changed, True
                continue
            if status in ACTIVE:
                f.seen_active = True
                if status != f.status:
                    f.status, changed = status, True
                    self.state.update(slug, status="running")
                    self._say(f"{slug} v{f.version}: {status}")
            elif not f.seen_active and now - f.pushed_at < self.poll.settle_s:
                if not f.stale_said:  # may still be the previous version's result
                    f.stale_said = True
                    self._say(f"{slug} v{f.version}: status reads {status} before the run was seen; waiting")
            elif status == "COMPLETE":
                self.state.update(slug, status=DONE, finished_at=now)
                del flights[slug]
                changed = True
                self._say(f"{slug} v{f.version}: COMPLETE after {_dur(now - f.pushed_at)}")
            elif status in FAILED:
                self.state.update(slug, status="error", finished_at=now, message=message)
                del flights[slug]
                self._say(f"{slug} v{f.version}: {status}{': ' + message if message else ''}")
                self.echo(f"--- last lines of the log of {slug} v{f.version} ---")
                self.echo(self.client.log_tail(f.node.id, f.version, self.log_lines))
                self.echo("---")
                self._say(f"stopped: {slug} failed; fix it and run `kaggle push` again "
                          "(finished kernels are kept, running ones are waited for)")
                return True, True
            else:
                self._say(f"{slug} v{f.version}: unknown status {status!r}; still waiting")
            if slug in flights and now - f.pushed_at > self.poll.max_wait_s:
                self.state.update(slug, status="timeout", message=f"no end after {_dur(now - f.pushed_at)}")
                self._say(f"stopped: {slug} v{f.version} has not ended after {_dur(now - f.pushed_at)}")
                return changed, True
        return changed, False


def _dur(seconds: float) -> str:
    m = int(seconds // 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{int(seconds % 60):02d}s"


# ---------------------------------------------------------------------------------- status / pull
def status_table(graph: Graph, state: State, client: Client | None,
                 names: list[str] | None = None) -> dict[str, str]:
    """slug -> ``vN state`` from the state file, with the live status when ``client`` is given;
    ``names`` (stages, slugs or prefixes) limits the table to those kernels."""
    out = {}
    for n in graph.select(names):
        st = state.kernel(n.slug)
        text = f"v{st['version']} {st.get('status')}" if st.get("version") else st.get("status", "not pushed")
        if client is not None and (st or not state.kernels):
            try:
                live, message = client.status(n.id, st.get("version"))
                text += f" (Kaggle: {live}{': ' + message[:80] if message else ''})"
            except KaggleError as exc:
                text += f" (Kaggle: {str(exc).splitlines()[0][:80]})"
        out[n.slug] = text
    return out


def pull(graph: Graph, state: State, client: Client, dest: Path, names: list[str] | None = None,
         echo: Callable[[str], None] = print) -> int:
    """Outputs of completed versions into ``dest/notebooks/<user>/<slug>/`` (how kernels see
    /kaggle/input) and their logs into ``dest/logs/``. A version that did not complete is never
    pulled; a folder appears only once its download finished. Returns 1 when some were skipped."""
    import json

    record_path = dest / "pull.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    skipped = 0
    for n in graph.select(names):
        version = state.version(n.slug)
        live, message = client.status(n.id, version)
        if live != "COMPLETE":
            skipped += 1
            echo(f"{n.slug}: {live}{': ' + message if message else ''}; not pulled")
            continue
        target = dest / "notebooks" / graph.user / n.slug
        if version is not None and record.get(n.slug, {}).get("version") == version and target.is_dir():
            echo(f"{n.slug}: v{version} already pulled")
            continue
        tmp = dest / ".partial" / n.slug
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log = client.output(n.id, version, tmp)
        if log is not None:
            (dest / "logs").mkdir(parents=True, exist_ok=True)
            (dest / "logs" / f"{n.slug}.log").write_text(log_text(log.read_text(errors="replace")))
            log.unlink()
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(target)
        files = sum(1 for p in target.rglob("*") if p.is_file())
        record[n.slug] = {"id": n.id, "version": version, "files": files}
        record_path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        echo(f"{n.slug}: v{version if version is not None else '(latest)'} -> {target} ({files} files)")
    shutil.rmtree(dest / ".partial", ignore_errors=True)
    return 1 if skipped else 0


__all__ = ["Pusher", "Poll", "parse_limits", "pull", "status_table", "tail"]
