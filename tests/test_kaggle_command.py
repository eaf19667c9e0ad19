"""The kaggle command wrapper against a fake `kaggle` on PATH: refusals printed with exit 0 are
errors, credentials are checked once with one message, secrets never reach the output. (`kaggle
push` itself, against a fake Kaggle with state: tests/test_orchestrate.py.)"""
from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from siimcovid.kaggle import command as KC
from siimcovid.kaggle.client import TERMINAL, Client
from siimcovid.__main__ import main

SECRET = "0123456789abcdef0123456789abcdef"

# The fake prints what kaggle 2.2.5 prints (kernels_push_cli / kernels_status_cli), chosen by
# FAKE_KAGGLE; it echoes KAGGLE_KEY when asked, to prove the wrapper scrubs it.
FAKE = textwrap.dedent('''\
    #!{python}
    import json, os, sys
    with open(os.environ["FAKE_KAGGLE_LOG"], "a") as f:
        f.write(json.dumps(sys.argv[1:]) + "\\n")
    mode = os.environ.get("FAKE_KAGGLE", "ok")
    cmd = sys.argv[1:3]
    if mode == "nocreds":
        print("You must authenticate before you can call the Kaggle API.")
        print("Follow the instructions to authenticate at: https://github.com/Kaggle/kaggle-cli")
        sys.exit(1)
    if cmd == ["kernels", "push"]:
        if mode == "refused":
            print("Kernel push error: Notebook not found or access denied")
        elif mode == "badsource":
            print("The following are not valid kernel sources and could not be added to the kernel: "
                  "['alice/nope']")
            print("Kernel version 3 successfully pushed.  Please check progress at https://www.kaggle.com/x")
        elif mode == "leak":
            print("debug: key=" + os.environ.get("KAGGLE_KEY", ""))
            print("Kernel push error: bad key " + os.environ.get("KAGGLE_KEY", ""))
        else:
            print("Kernel version 7 successfully pushed.  Please check progress at https://www.kaggle.com/x")
    elif cmd == ["kernels", "status"]:
        if mode == "error":
            print(sys.argv[3] + ' has status "KernelWorkerStatus.ERROR"')
            print('Failure message: "Your notebook tried to allocate more memory than is available."')
        else:
            print(sys.argv[3] + ' has status "KernelWorkerStatus.RUNNING"')
    ''')


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "kaggle"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FAKE_KAGGLE_LOG", str(log))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return {"home": home, "calls": calls, "exe": str(exe)}


def login(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)


def test_the_command_is_found_on_path(fake_kaggle, monkeypatch):
    login(monkeypatch)
    assert KC.Kaggle().exe == fake_kaggle["exe"]


def test_push_refusal_with_exit_0_raises_the_message(fake_kaggle, monkeypatch, tmp_path):
    login(monkeypatch)
    assert Client().push(tmp_path) == 7
    monkeypatch.setenv("FAKE_KAGGLE", "refused")
    with pytest.raises(KC.KaggleError, match="Notebook not found or access denied"):
        Client().push(tmp_path)
    # the server dropped a source but "pushed": the kernel would run without its input
    monkeypatch.setenv("FAKE_KAGGLE", "badsource")
    with pytest.raises(KC.KaggleError, match="not valid kernel sources.*alice/nope"):
        Client().push(tmp_path)


def test_status_parses_state_and_failure_message(fake_kaggle, monkeypatch):
    login(monkeypatch)
    assert Client().status("alice/siimcovid-wheels") == ("RUNNING", "")
    monkeypatch.setenv("FAKE_KAGGLE", "error")
    status, message = Client().status("alice/siimcovid-wheels")
    assert status == "ERROR" and status in TERMINAL and "more memory" in message


def test_credential_sources(tmp_path):
    home = tmp_path / "h"
    (home / ".kaggle").mkdir(parents=True)
    assert KC.find_credentials({}, home) is None
    with pytest.raises(KC.CredentialsError, match="no Kaggle credentials found: put your API token"):
        KC.check_credentials({}, home)
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "bob", "key": SECRET}))
    creds = KC.check_credentials({}, home)
    assert (creds.user, creds.source, creds.secrets) == ("bob", str(home / ".kaggle" / "kaggle.json"), (SECRET,))
    assert KC.check_credentials({"KAGGLE_USERNAME": "al", "KAGGLE_KEY": "k"}, home).source == "KAGGLE_USERNAME/KAGGLE_KEY"
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "kaggle.json").write_text("{}")
    with pytest.raises(KC.CredentialsError, match="lacks 'username' or 'key'"):
        KC.check_credentials({"KAGGLE_CONFIG_DIR": str(cfg)}, home)
    (home / ".kaggle" / "access_token").write_text("tok\n")
    assert KC.check_credentials({}, home).source == "~/.kaggle/access_token"
    assert KC.check_credentials({"KAGGLE_API_TOKEN": "t2"}, home).secrets == ("t2",)


def test_status_without_credentials_is_one_message_and_no_kaggle_call(fake_kaggle, capsys, tmp_path):
    assert main(["kaggle", "status", "--user", "alice", "--out", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Kaggle credentials found" in err, err
    assert fake_kaggle["calls"]() == [], "the client must not be run (it would print its banner per kernel)"


def test_status_runs_the_client_once_per_selected_kernel(fake_kaggle, monkeypatch, capsys, tmp_path):
    login(monkeypatch)
    assert main(["kaggle", "status", "--out", str(tmp_path / "k"),
                 "--only", "siimcovid-wheels", "siimcovid-preprocess"]) == 0
    calls = fake_kaggle["calls"]()
    assert sorted(c[2] for c in calls) == ["alice/siimcovid-preprocess", "alice/siimcovid-wheels"]
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("    ")}
    assert "not pushed (Kaggle: RUNNING)" in lines["siimcovid-wheels"]
    assert lines["siimcovid-inference"].split()[-1] == "-"  # not selected: not asked


def test_secrets_are_never_printed(fake_kaggle, monkeypatch, tmp_path):
    login(monkeypatch)
    monkeypatch.setenv("FAKE_KAGGLE", "leak")
    with pytest.raises(KC.KaggleError) as e:
        Client().push(tmp_path)
    assert SECRET not in str(e.value) and "***" in str(e.value)


def test_missing_executable_is_a_user_error(monkeypatch, tmp_path):
    from siimcovid.errors import UserError

    monkeypatch.setattr(KC.sys, "executable", str(tmp_path / "python"))  # no kaggle beside it either
    with pytest.raises(UserError, match="not on PATH"):
        KC.find_executable({"PATH": str(tmp_path)})
