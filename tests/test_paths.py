import pytest

from siimcovid import paths


def test_find_input_nested_and_hint(tmp_path, monkeypatch):
    monkeypatch.delenv("SIIM_INPUT", raising=False)
    deep = tmp_path / "competitions" / "siim-covid19-detection"
    deep.mkdir(parents=True)
    (deep / "sample_submission.csv").write_text("id,PredictionString\n")
    assert paths.find_input("sample_submission.csv", hint=tmp_path) == deep
    assert paths.find_input("sample_submission.csv", hint=deep) == deep
    monkeypatch.setenv("SIIM_INPUT", str(tmp_path))
    assert paths.find_input("sample_submission.csv") == deep


def test_find_input_missing_names_marker_and_roots(tmp_path, monkeypatch):
    monkeypatch.delenv("SIIM_INPUT", raising=False)
    with pytest.raises(FileNotFoundError, match="meta.csv") as e:
        paths.find_input("meta.csv", hint=tmp_path)
    assert str(tmp_path) in str(e.value)
