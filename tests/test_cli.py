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
