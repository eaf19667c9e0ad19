"""One CLI for every stage: ``python -m siimcovid <command> [options]``.

Each command lives in the module that holds its logic; the module is imported only when
its command runs, so ``score`` never pays for importing TensorFlow or torch.
"""
from __future__ import annotations

import importlib
import sys

# name -> (module, function, one-line help). The function takes argv (list[str]) -> int.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "synth": ("siimcovid.dev.synthetic", "cli", "write a synthetic, competition-shaped data set"),
    "synth-external": ("siimcovid.dev.external_sets", "cli", "synthetic external sets (RSNA, CheXpert layouts)"),
    "folds": ("siimcovid.folds", "cli", "write the patient-grouped, class-stratified fold CSV"),
    "score": ("siimcovid.metric", "cli", "score a submission with the competition metric"),
    "validate-submission": ("siimcovid.submission", "cli_validate", "check a submission.csv"),
    "make-submission": ("siimcovid.submission", "cli_make", "write submission.csv from study/image predictions"),
    "baseline": ("siimcovid.baseline", "cli_baseline", "write the prior-only submission (--oracle: see oracle)"),
    "oracle": ("siimcovid.dev.oracle", "cli", "write a synthetic set's ground truth as a submission (scores 1.0)"),
    "learner": ("siimcovid.baseline", "cli_learner", "fit the small scikit-learn learner and write its submission"),
    "check-data": ("siimcovid.checkdata", "cli", "check a competition folder's CSVs and DICOM tree, every problem at once"),
    "preprocess": ("siimcovid.preprocess.convert", "cli", "DICOM -> 8-bit images + meta.csv"),
    "external": ("siimcovid.preprocess.external.cli", "cli",
                 "an external X-ray set (rsna | vinbigdata | nih | chexpert) -> the preprocess layout"),
    "bench": ("siimcovid.dev.bench", "cli", "benchmarks (e.g. `bench preprocess`)"),
    "study-train": ("siimcovid.study.train", "cli", "train one fold of the study classifier"),
    "study-merge": ("siimcovid.ensemble.study_merge", "cli", "merge fold outputs: OOF mAP, TTA on/off, test predictions"),
    "binary-train": ("siimcovid.binary.train", "cli", "train folds of a binary none member (one sigmoid P(none))"),
    "binary-merge": ("siimcovid.ensemble.binary_merge", "cli", "merge binary none members x folds: fitted weights, OOF none AP"),
    "det-train": ("siimcovid.detect.train", "cli", "train one fold of a detector (mmdet), predict OOF + test boxes"),
    "det-merge": ("siimcovid.ensemble.det_merge", "cli", "merge detector folds: OOF/test boxes, opacity + none AP"),
    "det-compare": ("siimcovid.ensemble.det_merge", "cli_compare", "detector folds from other starts, side by side"),
    "det-pseudo": ("siimcovid.detect.pseudo", "cli", "pseudo-labels for the next detector round"),
    "pretrain-det": ("siimcovid.pretrain.det", "cli", "pre-train a detector on external boxes; it starts the folds"),
    "infer": ("siimcovid.inference", "cli", "inference kernel: test DICOMs -> study folds + learner -> submission.csv"),
    "cv-report": ("siimcovid.ensemble.report", "cli", "OOF score of every member and merge rule; fits the merge (HTML + PNGs)"),
    "kaggle": ("siimcovid.kaggle.cli", "cli_kaggle",
               "the kernel graph on Kaggle: render | plan | dataset | push | status | pull"),
    "rehearse": ("siimcovid.kaggle.rehearse", "cli",
                 "the push rehearsed: rendered kernels, Kaggle's input layout, no network"),
    "run-local": ("siimcovid.kaggle.local", "cli", "run the kernel graph's notebooks locally with papermill"),
}

# (command, flag) -> the command that runs instead, without the flag: a flag whose logic lives above
# its command's layer (the oracle reads a synthetic set's truth/, a dev-only thing; baseline may not
# import dev) keeps its old spelling.
FLAG_COMMANDS: dict[tuple[str, str], str] = {("baseline", "--oracle"): "oracle"}


def route(name: str, rest: list[str]) -> tuple[str, list[str]]:
    """The command that ``name rest`` runs (:data:`FLAG_COMMANDS`) and its arguments."""
    for (command, flag), target in FLAG_COMMANDS.items():
        if name == command and flag in rest:
            return target, [x for x in rest if x != flag]
    return name, rest


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m siimcovid <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`python -m siimcovid <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"siimcovid: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    name, rest = route(name, rest)
    module, func, _ = COMMANDS[name]
    from .errors import EXIT_USAGE, UserError

    try:
        fn = getattr(importlib.import_module(module), func)
        return int(fn(rest) or 0)
    except UserError as exc:  # a mistake the user can fix: one line, no traceback
        print(f"siimcovid {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
