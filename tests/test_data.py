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
