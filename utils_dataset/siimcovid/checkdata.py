"""``python -m siimcovid check-data --data D``: one validation pass over a competition folder.

Run before any work (``preprocess`` runs it and refuses to start on an error unless
``--keep-going``; ``synth --check`` runs it on what it wrote). It reports everything it finds at
once, by file and line (header = line 1), so a user fixes the folder in one go:

* errors (a silent wrong result if left: images dropped or mislabelled): a CSV's header, a
  one-hot row, an id suffix, a repeated id; boxes that do not parse, lie outside the image or
  disagree with ``label``; a train image row whose study has no label, whose DICOM is missing,
  lies in another study's folder, or exists twice; a ``.dcm`` that is not a regular file;
* warnings (reported, nothing lost that the CSVs list): train DICOMs no CSV lists, labelled
  studies without images, and everything about test/ (the hidden test set must never stop
  the inference kernel: a missing or odd test file gets a fallback row there).

The CSV rows are checked by their owner, :mod:`siimcovid.data`; this module walks the folder and
joins what it finds.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .data import (
    IMAGE_CSV,
    IMAGE_SUFFIX,
    SAMPLE_SUBMISSION,
    STUDY_CSV,
    STUDY_SUFFIX,
    pick_listed_copy,
    check_image_csv,
    check_study_csv,
    file_kind,
    missing_test_images,
    scan_dicoms,
)


@dataclass
class Report:
    """What :func:`check_data` found. ``bad_images``: image id -> why, the train images an error
    concerns (``preprocess --keep-going`` leaves exactly these out)."""

    data: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bad_images: dict[str, str] = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        head = (f"check-data {self.data}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
                f" ({', '.join(f'{v} {k}' for k, v in self.counts.items())})")
        return ([head] + [f"  ERROR   {e}" for e in self.errors] + [f"  warning {w}" for w in self.warnings])

    def print(self, file=None) -> None:
        print("\n".join(self.lines()), file=file or sys.stderr)


def _rel(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def read_sizes(paths: Iterable[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """image_id -> (Rows, Columns) from the DICOM headers (pixel data not read); an unreadable
    header is left out (the conversion reports that file, with its reason)."""
    import warnings

    import pydicom

    sizes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for image_id, path in paths:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
                sizes[image_id] = (int(ds.Rows), int(ds.Columns))
            except Exception:  # any unreadable header: the conversion words it
                continue
    return sizes


def _check_train(data: Path, report: Report, sizes: bool) -> None:
    study_rows, problems = check_study_csv(data / STUDY_CSV)
    report.errors += problems
    odd: list[str] = []
    dicoms = scan_dicoms(data / "train", not_regular=odd)
    for p in odd:
        report.errors.append(f"{_rel(p, data)}: {file_kind(p)}, not a regular file (never opened)")
        report.bad_images[Path(p).stem] = f"{file_kind(p)}, not a regular file"
    odd_ids = {Path(p).stem for p in odd}
    # one header read per file, pixel data never read
    image_sizes = read_sizes(zip(dicoms["image_id"], dicoms["path"])) if sizes else None
    image_rows, problems = check_image_csv(data / IMAGE_CSV, image_sizes)
    report.errors += problems
    for r in image_rows[image_rows["problem"] != ""].itertuples():
        report.bad_images[r.image_id] = f"{IMAGE_CSV} line {r.line}: {r.problem}"
    listed = dict(zip(image_rows["image_id"], image_rows["study_id"]))
    line_of = dict(zip(image_rows["image_id"], image_rows["line"]))
    dicoms, copies = pick_listed_copy(dicoms, listed)
    for c in copies:
        report.errors.append(f"{_rel(c['path'], data)}: a second file for image {c['image_id']} "
                             f"({IMAGE_CSV} line {line_of.get(c['image_id'], '?')} puts it in study "
                             f"{c['listed']}; {_rel(c['kept'], data)} is the one used): remove the stray copy")
    found = dict(zip(dicoms["image_id"], zip(dicoms["study_id"], dicoms["path"])))
    labelled = set(study_rows["study_id"])
    study_lines: dict[str, list[int]] = {}
    for iid, study in listed.items():
        where = f"{data / IMAGE_CSV} line {line_of[iid]}"
        if iid in found:
            folder, path = found[iid]
            if folder != study:
                report.errors.append(f"{where}: image {iid} belongs to study {study}, but its file is "
                                     f"{_rel(path, data)} (study {folder})")
                report.bad_images.setdefault(iid, f"file in study {folder}, {IMAGE_CSV} says {study}")
        elif iid not in odd_ids:
            report.errors.append(f"{where}: image {iid} has no DICOM (expected train/{study}/<series>/{iid}.dcm)")
            report.bad_images.setdefault(iid, "no DICOM")
        if study not in labelled:
            study_lines.setdefault(study, []).append(line_of[iid])
    for study, lines in study_lines.items():
        shown = ", ".join(map(str, lines[:5])) + (" ..." if len(lines) > 5 else "")
        report.errors.append(f"{data / IMAGE_CSV} line{'s' if len(lines) > 1 else ''} {shown}: study {study} has no "
                             f"row in {STUDY_CSV} ({len(lines)} image(s) would have no label)")
        for iid in (i for i, s in listed.items() if s == study):
            report.bad_images.setdefault(iid, f"study {study} has no row in {STUDY_CSV}")
    for iid, (folder, path) in found.items():
        if iid not in listed:
            report.warnings.append(f"{_rel(path, data)}: not listed in {IMAGE_CSV} (no labels; it is skipped)")
    with_images = set(listed.values())
    unused = sorted(labelled - with_images)
    if unused:
        report.warnings.append(f"{data / STUDY_CSV}: {len(unused)} studies have no image row in {IMAGE_CSV}, "
                               f"e.g. {unused[:5]}")
    report.counts.update({"train studies": len(study_rows), "train image rows": len(image_rows),
                          "train DICOMs": len(dicoms) + len(copies)})


def _check_test(data: Path, report: Report) -> None:
    odd: list[str] = []
    dicoms = scan_dicoms(data / "test", not_regular=odd)
    for p in odd:
        report.warnings.append(f"{_rel(p, data)}: {file_kind(p)}, not a regular file (never opened; its rows get "
                               f"fallback predictions)")
    dup = dicoms[dicoms["image_id"].duplicated(keep="first")]
    for r in dup.itertuples():
        report.warnings.append(f"{_rel(r.path, data)}: a second test file for image {r.image_id} (the first in path "
                               f"order is used)")
    try:
        missing = missing_test_images(data, list(dicoms["image_id"]) + [Path(p).stem for p in odd])
    except ValueError as exc:  # a sample_submission.csv of the wrong shape
        report.errors.append(str(exc))
        missing = []
    for m in missing:
        report.warnings.append(f"{data / SAMPLE_SUBMISSION}: image {m['image_id']} has no DICOM under test/")
    report.counts["test DICOMs"] = len(dicoms)


def _check_sample(data: Path, report: Report) -> None:
    import pandas as pd

    path = data / SAMPLE_SUBMISSION
    if not path.is_file():
        return
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        report.errors.append(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})")
        return
    if list(df.columns) != ["id", "PredictionString"]:
        report.errors.append(f"{path} line 1: header {list(df.columns)} != ['id', 'PredictionString']")
        return
    for i, v in enumerate(df["id"]):
        if not (v.endswith(STUDY_SUFFIX) or v.endswith(IMAGE_SUFFIX)):
            report.errors.append(f"{path} line {i + 2}: id {v!r} ends neither in {STUDY_SUFFIX} nor {IMAGE_SUFFIX}")
    report.counts["sample rows"] = len(df)


def check_data(data_dir: str | Path, splits: Sequence[str] = ("train", "test"), *, sizes: bool = True) -> Report:
    """Every problem of a competition folder's CSVs and DICOM tree (see the module doc); the
    splits whose folder is absent are not checked (preprocess converts what is there).
    ``sizes``: read each train DICOM's header to check boxes against the image size."""
    data = Path(data_dir)
    report = Report(str(data))
    _check_sample(data, report)
    if "train" in splits and (data / "train").is_dir():
        _check_train(data, report, sizes)
    if "test" in splits and (data / "test").is_dir():
        _check_test(data, report)
    return report


def check_or_refuse(data_dir: str | Path, splits: Sequence[str], *, keep_going: bool = False) -> Report:
    """:func:`check_data`, its report printed (stderr) when it found anything; an error is a
    UserError (the run refused before anything is written) unless ``keep_going``."""
    from .errors import UserError

    report = check_data(data_dir, splits)
    if report.errors or report.warnings:
        report.print(file=sys.stderr)
    if report.errors and not keep_going:
        raise UserError(f"--data {data_dir}: check-data found {len(report.errors)} error(s) (listed above; the "
                        f"first: {report.errors[0]}); fix the folder, or pass --keep-going to leave the "
                        f"{len(report.bad_images)} image(s) concerned out")
    return report


def cli(argv: list[str]) -> int:
    """Check a competition folder's CSVs and DICOM tree in one pass; list every problem."""
    from .clihelp import HelpFormatter
    from .data import find_data_dir

    ap = argparse.ArgumentParser(
        prog="python -m siimcovid check-data", description=cli.__doc__, formatter_class=HelpFormatter,
        epilog="Writes nothing. Prints every error and warning by file and line (header = line 1). Exit 0: no "
               "error (warnings allowed); 1: errors found (preprocess would refuse to start without --keep-going); "
               "2: no such folder.")
    ap.add_argument("--data", required=True, help="competition folder (train CSVs, train/, test/, "
                                                  "sample_submission.csv), or the one folder below it holding it")
    ap.add_argument("--split", nargs="+", default=["train", "test"], choices=["train", "test"],
                    help="which splits to check")
    ap.add_argument("--no-sizes", action="store_true",
                    help="do not read the train DICOM headers (boxes are then not checked against the image size)")
    a = ap.parse_args(argv)
    report = check_data(find_data_dir(a.data), a.split, sizes=not a.no_sizes)
    report.print(file=sys.stdout)
    kinds = Counter(e.split(":")[0].split(" line")[0] for e in report.errors)
    if kinds:
        print("errors by file: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    return 0 if report.ok else 1
