import importlib
import subprocess
import sys

from siimcovid.__main__ import COMMANDS, main


def test_usage_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_command_resolves_to_a_function():
    for name, (module, func, _) in COMMANDS.items():
        assert callable(getattr(importlib.import_module(module), func)), name


LIGHT_PROBE = """
import sys
from siimcovid.__main__ import main
try:
    main(["score", "--help"])
except SystemExit:
    pass
print("tensorflow" in sys.modules, "torch" in sys.modules)
"""


def test_light_commands_do_not_import_tensorflow():
    r = subprocess.run([sys.executable, "-c", LIGHT_PROBE], capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "False False", r.stdout + r.stderr


# ---------------------------------------------------------------- help texts and user errors (issue #13)
import argparse as _argparse

import pytest as _pytest

HELPED = ["synth", "score", "validate-submission", "make-submission", "folds", "baseline"]


class _Parser(Exception):
    def __init__(self, parser):
        self.parser = parser


def _parser_of(name, monkeypatch):
    """The command's argparse parser, caught when the command parses its argv."""
    def catch(self, *args, **kwargs):
        raise _Parser(self)

    monkeypatch.setattr(_argparse.ArgumentParser, "parse_args", catch)
    module, func, _ = COMMANDS[name]
    with _pytest.raises(_Parser) as e:
        getattr(importlib.import_module(module), func)([])
    return e.value.parser


@_pytest.mark.parametrize("name", HELPED)
def test_help_describes_every_option_its_default_and_the_outputs(name, monkeypatch):
    parser = _parser_of(name, monkeypatch)
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if isinstance(action, _argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"
        if action.default is not None and action.default is not False:
            assert f"(default: {action.default})" in text or "default" in action.help, (
                f"{name} {action.option_strings}: default {action.default!r} not shown")
    assert parser.epilog and "Writes" in parser.epilog, f"{name}: the help does not say where outputs land"


@_pytest.mark.parametrize("argv", [
    ["synth", "--out", "{tmp}/new", "--studies", "0"],
    ["synth", "--out", "{tmp}/file.txt"],
    ["folds", "--data", "{tmp}/nope"],
    ["folds", "--data", "{tmp}", "--k", "1"],
    ["baseline", "--data", "{tmp}"],
    ["score", "{tmp}/file.txt", "--truth", "{tmp}"],
    ["validate-submission", "{tmp}/nope.csv", "--data", "{tmp}"],
    ["make-submission", "--data", "{tmp}/nope"],
    ["study-merge", "--work", "{tmp}/nope"],
    ["study-merge", "--work", "{tmp}"],
])
def test_user_mistakes_are_one_line_and_write_nothing(argv, tmp_path, capsys, caplog):
    (tmp_path / "file.txt").write_text("not a folder\n")
    before = sorted(tmp_path.rglob("*"))
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"siimcovid {argv[0]}: "), err
    assert sorted(tmp_path.rglob("*")) == before
    assert not caplog.records  # the run header is logged only once the inputs are known
