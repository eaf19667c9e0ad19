"""Prior-only baseline and the small learner: content of the prior submission, the learner
beats it on a tiny synthetic set, and its boxes come back in ORIGINAL pixels."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from siimcovid import baseline, data
from siimcovid.dev import synthetic
from siimcovid.baseline import LearnerConfig, boxes_to_original, fit_predict, heat_to_boxes, load_preprocessed
from siimcovid.boxes import Resize, iou_matrix
from siimcovid.metric import score_submission
from siimcovid.submission import build_submission, parse_prediction_string


# ---------------------------------------------------------------- fixtures
def write_preprocessed(root, n_studies: int, seed: int, size: int = 64, keep_aspect: bool = False,
                       scale: float = 0.05, strength: float = 1.0):
    """A preprocess-shaped folder (docs/contracts.md) straight from the synthetic renderer:
    meta.csv + images/<size>/<split>/<id>.png, no DICOM step. Returns (meta, study truth,
    image truth) with the truth frames shaped like data.read_study_csv / read_image_csv."""
    import cv2

    plan = synthetic.plan_dataset(synthetic.SynthConfig(out=str(root), studies=n_studies, seed=seed, scale=scale))
    old = dict(synthetic.OPACITY_STRENGTH)
    synthetic.OPACITY_STRENGTH.update({k: (m * strength, s) for k, (m, s) in old.items()})
    rows = []
    try:
        for r in plan.itertuples(index=False):
            disp = synthetic.render_study_image(np.random.default_rng(r.render_seed), r.height, r.width,
                                                r.study_class, r.boxes, anatomy=r.anatomy)
            rz = Resize.plan(r.height, r.width, size, keep_aspect)
            ch, cw = rz.content_hw
            img = np.zeros((size, size), np.uint8)
            img[:ch, :cw] = cv2.resize((disp * 255).astype(np.uint8), (cw, ch), interpolation=cv2.INTER_AREA)
            p = root / "images" / str(size) / r.split / f"{r.image_id}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), img)
            b = np.asarray(r.boxes, float).reshape(-1, 4)
            train = r.split == "train"
            rows.append({
                "image_id": r.image_id, "study_id": r.study_id, "series_id": r.series_id, "split": r.split,
                "dicom": f"{r.split}/{r.study_id}/{r.series_id}/{r.image_id}.dcm",
                "orig_h": r.height, "orig_w": r.width, "keep_aspect": keep_aspect,
                "boxes": json.dumps(b.tolist() if train else []),
                f"boxes_{size}": json.dumps(rz.to_resized(b).tolist() if train else []),
                "study_label": data.STUDY_CLASSES.index(r.study_class) if train else -1,
                "fold": 0 if train else -1,
            })
    finally:
        synthetic.OPACITY_STRENGTH.update(old)
    meta = pd.DataFrame(rows)
    meta.to_csv(root / "meta.csv", index=False)
    test = plan[plan["split"] == "test"]
    st = test.drop_duplicates("study_id")
    study_truth = pd.DataFrame({"study_id": st["study_id"], "label": st["study_class"].map(data.STUDY_CLASSES.index)})
    image_truth = pd.DataFrame({"image_id": test["image_id"], "study_id": test["study_id"], "boxes": test["boxes"]})
    image_truth["label"] = image_truth["boxes"].map(data.format_label)
    return meta, study_truth, image_truth


def sample_ids(meta: pd.DataFrame) -> list[str]:
    test = meta[meta["split"] == "test"]
    return [f"{s}_study" for s in test["study_id"].unique()] + [f"{i}_image" for i in test["image_id"]]


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_baseline")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synthetic.generate(synthetic.SynthConfig(out=str(out), studies=24, seed=3, scale=0.04), progress=False)
    return out


# ---------------------------------------------------------------- prior baseline
def test_prior_submission_content(synth_data, tmp_path):
    out = tmp_path / "sub.csv"
    assert baseline.cli_baseline(["--data", str(synth_data), "--out", str(out),
                                  "--study-preds", str(tmp_path / "s.csv"), "--image-preds", str(tmp_path / "i.csv")]) == 0
    sub = pd.read_csv(out, dtype=str, keep_default_na=False)
    sample = pd.read_csv(synth_data / data.SAMPLE_SUBMISSION, dtype=str)
    assert sub["id"].tolist() == sample["id"].tolist()

    studies = data.read_study_csv(synth_data / data.STUDY_CSV)
    images = data.read_image_csv(synth_data / data.IMAGE_CSV)
    expect = np.bincount(studies["label"], minlength=4) / len(studies)
    p_none = images["boxes"].map(len).eq(0).mean()
    for row_id, s in zip(sub["id"], sub["PredictionString"]):
        preds = parse_prediction_string(s)
        if row_id.endswith("_study"):
            assert [p[0] for p in preds] == list(data.STUDY_CLASSES)
            probs = np.array([p[1] for p in preds])
            assert probs.sum() == pytest.approx(1.0, abs=1e-5)
            np.testing.assert_allclose(probs, expect, atol=1e-6)
        else:
            assert len(preds) == 1 and preds[0][0] == "none"  # no boxes
            assert preds[0][1] == pytest.approx(p_none, abs=1e-6)
    assert set(pd.read_csv(tmp_path / "s.csv").columns) == {"study_id", *data.STUDY_CLASSES}
    assert list(pd.read_csv(tmp_path / "i.csv").columns) == ["image_id", "boxes", "none"]


def test_oracle_scores_one_and_needs_truth(synth_data, tmp_path):
    from siimcovid import metric

    from siimcovid.__main__ import main
    from siimcovid.dev import oracle

    out = tmp_path / "oracle.csv"
    # the old spelling `baseline --oracle` runs the dev command
    assert main(["baseline", "--data", str(synth_data), "--out", str(out), "--oracle"]) == 0
    result = metric.score_submission(pd.read_csv(out, dtype=str, keep_default_na=False),
                                     data.read_study_csv(synth_data / "truth" / "test_study_level.csv"),
                                     data.read_image_csv(synth_data / "truth" / "test_image_level.csv"))
    assert result["score"] == pytest.approx(1.0)
    again = tmp_path / "oracle2.csv"
    assert oracle.cli(["--data", str(synth_data), "--out", str(again)]) == 0
    assert again.read_text() == out.read_text()
    (tmp_path / "nodata").mkdir()
    with pytest.raises(FileNotFoundError, match="truth"):
        oracle.oracle_predictions(tmp_path / "nodata")
    with pytest.raises(SystemExit):  # baseline itself has no --oracle: only the route knows it
        baseline.cli_baseline(["--data", str(synth_data), "--out", str(out), "--oracle"])


def test_prior_helpers_reject_empty_input():
    with pytest.raises(ValueError):
        baseline.class_priors(pd.DataFrame({"label": []}))
    with pytest.raises(ValueError):
        baseline.none_fraction(pd.DataFrame({"boxes": []}))


# ---------------------------------------------------------------- boxes back to original pixels
def test_heat_to_boxes_and_back_to_original_pixels():
    heat = np.zeros((16, 16))
    heat[9:14, 2:6] = 0.9  # one blob in the left half
    heat[3:6, 11:14] = 0.4  # a weaker one on the right, found only at the lower threshold
    b = heat_to_boxes(heat, cell=4, thresholds=(0.5, 0.3), min_cells=2)
    assert len(b) == 2
    np.testing.assert_allclose(b[0, :4], [8, 36, 24, 56])  # cells -> work pixels
    assert b[0, 4] > b[1, 4]
    # work 64 px <- PNG 256 px letterboxed from a 600 x 300 (H x W) original: one scale, 600 / 256
    # per PNG px, and 256 / 64 PNG px per work px; the letterbox pad is right of x = 128.
    orig = boxes_to_original(b[:, :4], 600, 300, size=256, work=64, keep_aspect=True)
    np.testing.assert_allclose(orig[0], [8 * 600 / 64, 36 * 600 / 64, 24 * 600 / 64, 56 * 600 / 64])
    # a box reaching into the pad is clipped to the original image
    assert boxes_to_original(np.array([[30.0, 0, 40, 10]]), 600, 300, 256, 64, True)[0].tolist() == pytest.approx(
        [30 * 600 / 64, 0, 300, 10 * 600 / 64])
    # stretched: each axis on its own
    np.testing.assert_allclose(boxes_to_original(np.array([[8.0, 16, 32, 64]]), 600, 300, 256, 64, False),
                               [[8 * 300 / 64, 16 * 600 / 64, 32 * 300 / 64, 600]])


@pytest.mark.parametrize("keep_aspect", [False, True])
def test_learner_boxes_overlap_truth_in_original_pixels(tmp_path, keep_aspect):
    """Strong opacities (easy case): the top box of most opacity images hits a truth box with
    IoU > 0.3 in the ORIGINAL frame, whatever the letterboxing."""
    write_preprocessed(tmp_path, n_studies=50, seed=11, size=96, keep_aspect=keep_aspect, strength=2.5)
    meta, size, images = load_preprocessed(tmp_path)
    assert size == 96 and len(images) == len(meta)
    truth = pd.read_csv(tmp_path / "meta.csv")  # test rows carry no boxes: rebuild from the plan
    plan = synthetic.plan_dataset(synthetic.SynthConfig(out=str(tmp_path), studies=50, seed=11, scale=0.05))
    truth_boxes = dict(zip(plan["image_id"], plan["boxes"]))
    _, image_preds, _ = fit_predict(meta, images, size, LearnerConfig(inner_folds=2, patch_iter=60))
    hits, n = 0, 0
    for r in image_preds.itertuples():
        t = np.asarray(truth_boxes[r.image_id], float).reshape(-1, 4)
        p = np.asarray(json.loads(r.boxes), float).reshape(-1, 5)
        if len(t) == 0:
            continue
        n += 1
        if len(p):
            top = p[np.argmax(p[:, 4]), :4]
            hits += iou_matrix(top[None], t).max() > 0.3
            h, w = truth.set_index("image_id").loc[r.image_id, ["orig_h", "orig_w"]]
            assert p[:, [0, 2]].max() <= w + 1e-6 and p[:, [1, 3]].max() <= h + 1e-6
    assert n >= 5 and hits / n >= 0.6, (hits, n)


# ---------------------------------------------------------------- learner beats the prior
def test_learner_beats_prior_baseline(tmp_path):
    meta, study_truth, image_truth = write_preprocessed(tmp_path, n_studies=140, seed=4, size=64)
    meta, size, images = load_preprocessed(tmp_path)
    ids = sample_ids(meta)

    train = meta[meta["split"] == "train"]
    priors = baseline.class_priors(train.drop_duplicates("study_id").rename(columns={"study_label": "label"}))
    p_none = baseline.none_fraction(train)  # load_preprocessed parsed the boxes
    test = meta[meta["split"] == "test"]
    prior_study = pd.DataFrame({"study_id": test["study_id"].unique()})
    for c, p in zip(data.STUDY_CLASSES, priors):
        prior_study[c] = p
    prior_image = pd.DataFrame({"image_id": test["image_id"], "boxes": "[]", "none": p_none})
    prior_sub, _ = build_submission(ids, prior_study, prior_image)

    study_preds, image_preds, _ = fit_predict(meta, images, size, LearnerConfig(inner_folds=2, patch_iter=60))
    assert list(study_preds.columns) == ["study_id", *data.STUDY_CLASSES]
    np.testing.assert_allclose(study_preds[list(data.STUDY_CLASSES)].sum(axis=1), 1.0, atol=1e-6)
    sub, problems = build_submission(ids, study_preds, image_preds,
                                     image_sizes={r.image_id: (r.orig_h, r.orig_w) for r in meta.itertuples()})
    assert not problems

    base = score_submission(prior_sub, study_truth, image_truth)
    learned = score_submission(sub, study_truth, image_truth)
    assert learned["score"] > base["score"] + 0.15, (base["score"], learned["score"])
    assert learned["ap"]["opacity"] > 0.1 and base["ap"]["opacity"] == 0.0


def test_load_preprocessed_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.csv"):
        load_preprocessed(tmp_path)
    pd.DataFrame({"image_id": ["a"], "split": ["train"]}).to_csv(tmp_path / "meta.csv", index=False)
    with pytest.raises(ValueError, match="missing columns"):
        load_preprocessed(tmp_path)


def test_learner_and_baseline_share_exit_statuses(synth_data, tmp_path, capsys):
    """A submission with rows the model could not predict (a PNG lost after preprocess) is a
    partial result for both commands (exit 1); a wrong folder is a one-line user error (exit 2)."""
    from siimcovid.__main__ import main
    from siimcovid.preprocess.convert import PreprocessConfig, run

    pre = tmp_path / "pre"
    run(PreprocessConfig(data=str(synth_data), out=str(pre), sizes=[32], workers=1, progress=False, n_folds=2))
    meta = pd.read_csv(pre / "meta.csv", dtype=str)
    lost = meta[meta["split"] == "test"].iloc[0]
    (pre / "images" / "32" / "test" / f"{lost['image_id']}.png").unlink()
    args = ["--data", str(synth_data), "--pre", str(pre), "--work", "32", "--out", str(tmp_path / "sub.csv")]
    assert baseline.cli_learner(args) == 1
    assert main(["learner", "--data", str(synth_data), "--pre", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "s2.csv")]) == 2
    assert main(["baseline", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "s3.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("siimcovid ") for line in err)
