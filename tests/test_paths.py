import pytest

from siimcovid import data, paths
from siimcovid.errors import UserError


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


def _competition(folder):
    folder.mkdir(parents=True)
    (folder / "sample_submission.csv").write_text("id,PredictionString\n")
    return folder


def test_a_parent_holding_two_competition_folders_is_an_error_listing_both(tmp_path, monkeypatch):
    monkeypatch.delenv("SIIM_INPUT", raising=False)
    a = _competition(tmp_path / "a" / "siim")
    b = _competition(tmp_path / "b")
    with pytest.raises(paths.AmbiguousInputError) as e:
        paths.find_input("sample_submission.csv", hint=tmp_path)
    assert str(a) in str(e.value) and str(b) in str(e.value) and "pass the one you mean" in str(e.value)
    assert isinstance(e.value, UserError)
    with pytest.raises(paths.AmbiguousInputError):
        data.find_data_dir(tmp_path)
    monkeypatch.setenv("SIIM_INPUT", str(tmp_path))  # the same rule without a path
    with pytest.raises(paths.AmbiguousInputError):
        data.find_data_dir()
    assert data.find_data_dir(b) == b


def test_a_wrong_explicit_path_never_falls_back_to_siim_input(tmp_path, monkeypatch):
    good = _competition(tmp_path / "input" / "siim")
    monkeypatch.setenv("SIIM_INPUT", str(tmp_path / "input"))
    assert data.find_data_dir() == good  # no path: the search still works
    with pytest.raises(paths.InputNotFoundError, match="no such folder"):
        data.find_data_dir(tmp_path / "typo")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(paths.InputNotFoundError, match="no folder holding 'sample_submission.csv' at or below it"):
        data.find_data_dir(empty)
    with pytest.raises(FileNotFoundError):  # callers treating a missing optional input as absent keep working
        data.find_data_dir(empty)


def test_the_search_stops_at_a_folder_holding_the_marker(tmp_path, monkeypatch):
    """A competition folder is never searched for a second copy of its marker (no walk of its DICOMs)."""
    monkeypatch.delenv("SIIM_INPUT", raising=False)
    comp = _competition(tmp_path / "competitions" / "siim")
    _competition(comp / "train" / "copy")
    assert paths.find_input("sample_submission.csv", hint=tmp_path) == comp


def test_cli_data_mistakes_are_one_line_exit_2(tmp_path, capsys, caplog):
    from siimcovid.__main__ import main

    _competition(tmp_path / "a")
    _competition(tmp_path / "b")
    sub = tmp_path / "s.csv"
    sub.write_text("id,PredictionString\n")
    for cmd in (["validate-submission", str(sub), "--data", str(tmp_path)],
                ["make-submission", "--data", str(tmp_path), "--out", str(tmp_path / "out.csv")],
                ["baseline", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "out.csv")]):
        assert main(cmd) == 2, cmd
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert not caplog.records, cmd  # not even the run header: the start failed before it
    assert not (tmp_path / "out.csv").exists()
