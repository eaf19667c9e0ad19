import pytest

from siimcovid import data


def test_label_round_trip():
    boxes = [(10.5, 20.0, 110.25, 220.0), (300.0, 40.0, 400.0, 140.0)]
    assert data.parse_label(data.format_label(boxes)) == boxes
    assert data.parse_label("none 1 0 0 1 1") == []
    assert data.format_label([]) == "none 1 0 0 1 1"


def test_boxes_column_round_trip_and_forms():
    cell = "[{'x': 789.28836, 'y': 582.43035, 'width': 1026.65662, 'height': 1917.30292}]"
    (x0, y0, x1, y1), = data.parse_boxes_column(cell)
    assert (x0, y0) == (789.28836, 582.43035)
    assert x1 == pytest.approx(789.28836 + 1026.65662) and y1 == pytest.approx(582.43035 + 1917.30292)
    assert data.parse_boxes_column(data.format_boxes_column([(x0, y0, x1, y1)]))[0] == pytest.approx((x0, y0, x1, y1))
    assert data.parse_boxes_column("") == [] and data.parse_boxes_column(float("nan")) == []


@pytest.mark.parametrize("label,msg", [
    ("opacity 1 0 0 1", "groups of six"),
    ("cloud 1 0 0 1 1", "unknown label"),
    ("opacity 1 a b c d", "non-numeric"),
])
def test_bad_label_names_source(label, msg):
    with pytest.raises(data.DataFormatError, match=msg) as e:
        data.parse_label(label, source="x.csv row 7")
    assert "x.csv row 7" in str(e.value)


def test_read_csvs_exact_format(tmp_path):
    (tmp_path / data.STUDY_CSV).write_text(
        "id,Negative for Pneumonia,Typical Appearance,Indeterminate Appearance,Atypical Appearance\n"
        "00086460a852_study,0,1,0,0\n000c9c05fd14_study,1,0,0,0\n")
    (tmp_path / data.IMAGE_CSV).write_text(
        "id,boxes,label,StudyInstanceUID\n"
        "000a312787f2_image,\"[{'x': 789.28836, 'y': 582.43035, 'width': 1026.65662, 'height': 1917.30292}]\","
        "opacity 1 789.28836 582.43035 1815.94498 2499.73327,00086460a852\n"
        "000c3a3f293f_image,,none 1 0 0 1 1,000c9c05fd14\n")
    s = data.read_study_csv(tmp_path / data.STUDY_CSV)
    assert s["study_id"].tolist() == ["00086460a852", "000c9c05fd14"]
    assert s["label"].tolist() == [1, 0]
    im = data.read_image_csv(tmp_path / data.IMAGE_CSV)
    assert im["image_id"].tolist() == ["000a312787f2", "000c3a3f293f"]
    assert im["boxes"][0] == [(789.28836, 582.43035, 1815.94498, 2499.73327)] and im["boxes"][1] == []


def test_read_csv_errors_name_the_file(tmp_path):
    p = tmp_path / "train_study_level.csv"
    p.write_text("id,neg,typ\nx_study,1,0\n")
    with pytest.raises(data.DataFormatError, match="train_study_level.csv: header"):
        data.read_study_csv(p)
    p.write_text("id,Negative for Pneumonia,Typical Appearance,Indeterminate Appearance,Atypical Appearance\n"
                 "a_study,1,1,0,0\n")
    with pytest.raises(data.DataFormatError, match="exactly one 1"):
        data.read_study_csv(p)


def test_scan_dicoms_maps_study_series_image(tmp_path):
    for st, se, im in [("s1", "r1", "i1"), ("s1", "r1", "i2"), ("s2", "r9", "i3")]:
        (tmp_path / st / se).mkdir(parents=True, exist_ok=True)
        (tmp_path / st / se / f"{im}.dcm").write_bytes(b"")
    (tmp_path / "stray.dcm").write_bytes(b"")  # not <study>/<series>/<image>.dcm: ignored
    df = data.scan_dicoms(tmp_path)
    assert df[["image_id", "series_id", "study_id"]].values.tolist() == [
        ["i1", "r1", "s1"], ["i2", "r1", "s1"], ["i3", "r9", "s2"]]
    with pytest.raises(FileNotFoundError, match="nope"):
        data.scan_dicoms(tmp_path / "nope")


STUDY_HEADER = "id,Negative for Pneumonia,Typical Appearance,Indeterminate Appearance,Atypical Appearance\n"


def test_study_csv_bad_rows_are_named_by_line(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text(STUDY_HEADER + "a_study,1,0,0,0\nb_study,0,x,1,0\nc_study,0,2,-1,0\n")
    with pytest.raises(data.DataFormatError, match=r"s\.csv: lines \[3, 4\] do not hold exactly one 1"):
        data.read_study_csv(p)


def test_repeated_ids_are_an_error_naming_the_file(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text(STUDY_HEADER + "a_study,1,0,0,0\na_study,0,1,0,0\n")
    with pytest.raises(data.DataFormatError, match=r"s\.csv: ids listed more than once, e\.g\. \['a'\]"):
        data.read_study_csv(p)
    q = tmp_path / "i.csv"
    q.write_text("id,boxes,label,StudyInstanceUID\nx_image,,none 1 0 0 1 1,a\nx_image,,none 1 0 0 1 1,a\n")
    with pytest.raises(data.DataFormatError, match=r"i\.csv: ids listed more than once"):
        data.read_image_csv(q)


def test_image_csv_bad_label_names_file_and_line(tmp_path):
    q = tmp_path / "i.csv"
    q.write_text("id,boxes,label,StudyInstanceUID\nx_image,,none 1 0 0 1 1,a\ny_image,,opacity 1 0 0 1,a\n")
    with pytest.raises(data.DataFormatError, match=r"i\.csv row 3: 5 tokens"):
        data.read_image_csv(q)


def test_unreadable_csv_names_the_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(data.DataFormatError, match=r"empty\.csv: not a readable CSV"):
        data.read_study_csv(p)


def test_digit_only_ids_keep_their_leading_zeros(tmp_path):
    p = tmp_path / "i.csv"
    p.write_text("id,boxes,label,StudyInstanceUID\n000123456789_image,,none 1 0 0 1 1,000987654321\n")
    im = data.read_image_csv(p)
    assert (im["image_id"][0], im["study_id"][0]) == ("000123456789", "000987654321")


# ---------------------------------------------------------------- issue 24: rows checked one by one

IMAGE_HEADER = "id,boxes,label,StudyInstanceUID\n"


def test_check_image_csv_parses_both_box_columns_and_reports_each_bad_row(tmp_path):
    q = tmp_path / "i.csv"
    q.write_text(IMAGE_HEADER
                 + "a_image,\"[{'x': 1, 'y': 2, 'width': 3, 'height': 4}]\",opacity 1 1 2 4 6,s\n"  # good
                 + "b_image,\"[{'x': 1, 'y': 2,\",opacity 1 1 2 4 6,s\n"  # boxes do not parse
                 + "c_image,\"[{'x': 1, 'y': 2, 'width': 3, 'height': 4}]\",none 1 0 0 1 1,s\n"  # none + a box
                 + "d_image,\"[{'x': 1, 'y': 2, 'width': 30, 'height': 4}]\",opacity 1 1 2 4 6,s\n"  # disagree
                 + "e_image,\"[{'x': -3, 'y': 2, 'width': 3, 'height': 4}]\",opacity 1 -3 2 0 6,s\n"  # negative
                 + "f_image,\"[{'x': 1, 'y': 2, 'width': 300, 'height': 4}]\",opacity 1 1 2 301 6,s\n"  # off image
                 + "g,,none 1 0 0 1 1,s_study\n")  # no suffix; a suffixed study
    rows, problems = data.check_image_csv(q, image_sizes={"f": (100, 200)})
    assert rows["problem"].eq("").tolist() == [True] + [False] * 6
    assert rows.loc[0, "boxes"] == [(1.0, 2.0, 4.0, 6.0)]
    by_line = {int(p.split(" line ")[1].split(":")[0]): p for p in problems}
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8]
    assert "boxes: not a Python literal" in by_line[3]
    assert "label says none but 1 box(es)" in by_line[4]
    assert "disagree" in by_line[5]
    assert "negative coordinates" in by_line[6]
    assert "outside the 200 x 100 (w x h) image" in by_line[7]
    assert "lacks the _image suffix" in by_line[8] and "carries a suffix" in by_line[8]


def test_check_study_csv_names_suffix_onehot_repeat_and_header_only(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text(STUDY_HEADER + "a_study,1,0,0,0\nb_image,0,1,0,0\nc_study,1,1,0,0\na_study,0,1,0,0\n")
    rows, problems = data.check_study_csv(p)
    assert rows["study_id"].tolist() == ["a"] and rows["label"].tolist() == [0]
    assert [q.split(": ", 1)[0] for q in problems] == [f"{p} line 3", f"{p} line 4", f"{p} line 5"]
    assert "ends in _image, expected _study" in problems[0] and "exactly one 1" in problems[1]
    assert "repeats line 2" in problems[2]
    p.write_text(STUDY_HEADER)
    assert data.check_study_csv(p)[1] == [f"{p}: holds only its header (no study has a label)"]


def test_scan_dicoms_never_lists_a_fifo(tmp_path):
    import os

    (tmp_path / "s" / "r").mkdir(parents=True)
    (tmp_path / "s" / "r" / "i1.dcm").write_bytes(b"")
    os.mkfifo(tmp_path / "s" / "r" / "i2.dcm")
    odd = []
    df = data.scan_dicoms(tmp_path, not_regular=odd)
    assert df["image_id"].tolist() == ["i1"] and odd == [str(tmp_path / "s" / "r" / "i2.dcm")]
    assert data.file_kind(odd[0]) == "a FIFO (named pipe)"


def test_index_train_keeps_the_copy_in_the_listed_study(tmp_path):
    """A stray copy in a study that sorts first used to win; now the listed study's file does,
    and strict mode refuses a folder holding a stray copy."""
    (tmp_path / data.STUDY_CSV).write_text(STUDY_HEADER + "a_study,1,0,0,0\nz_study,0,1,0,0\n")
    (tmp_path / data.IMAGE_CSV).write_text(IMAGE_HEADER + "ia_image,,none 1 0 0 1 1,a\n"
                                           "iz_image,,opacity 1 1 1 5 5,z\n")
    for st, im in [("a", "ia"), ("z", "iz"), ("a", "iz")]:  # a/r/iz.dcm: the stray copy
        (tmp_path / "train" / st / "r").mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / st / "r" / f"{im}.dcm").write_bytes(b"")
    df, problems = data.index_train(tmp_path, strict=False)
    iz = df.set_index("image_id").loc["iz"]
    assert iz["study_id"] == "z" and iz["study_label"] == 1 and iz["path"].endswith("z/r/iz.dcm")
    (p,) = problems
    assert p["dicom"] == "train/a/r/iz.dcm" and p["reason"].startswith("stray copy") and p["stage"] == "index"
    with pytest.raises(data.DataFormatError, match="stray copies"):
        data.index_train(tmp_path, strict=True)
