"""The user commands are installed as console scripts beside their ``python -m`` forms (setup.cfg)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest


def _scripts() -> dict:
    return {e.name: e for e in distribution("monai-sam-peft").entry_points if e.group == "console_scripts"}


def test_every_console_script_is_a_module_main():
    scripts = _scripts()
    assert {"sam-peft-segment", "sam-peft-quickstart", "sam-peft-make-datalist", "sam-peft-accuracy"} <= set(scripts)
    for name, entry in scripts.items():
        module, _, function = entry.value.partition(":")
        assert function == "main" and callable(entry.load()), name
        assert module.startswith("common."), name  # the same code as `python -m <module>`


def test_a_console_script_runs_as_installed():
    script = Path(sys.executable).parent / "sam-peft-segment"
    assert script.is_file(), "the package is installed with its console scripts (pip install -e .)"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "--bundle" in done.stdout, done.stderr[-2000:]


def test_commands_find_bundles_and_data_by_option_environment_or_working_folder(tmp_path, monkeypatch):
    from common.cli import BUNDLES_ENV, DATA_ENV, bundles_folder, data_root

    monkeypatch.delenv(BUNDLES_ENV, raising=False)
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # outside any checkout: no bundles/ here
    with pytest.raises(FileNotFoundError, match=f"give --bundles .*set {BUNDLES_ENV}"):
        bundles_folder()
    assert data_root() == tmp_path.parent / "shared" / "data"
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv(BUNDLES_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    assert bundles_folder() == tmp_path / "mine" and data_root() == tmp_path / "data"
    assert bundles_folder(tmp_path) == tmp_path and data_root(tmp_path) == tmp_path  # an option wins
    with pytest.raises(FileNotFoundError, match="--bundles .*nowhere: no such folder"):
        bundles_folder(tmp_path / "nowhere")
    monkeypatch.delenv(BUNDLES_ENV)
    (tmp_path / "bundles").mkdir()
    assert bundles_folder() == tmp_path / "bundles"  # the working folder, as the README's commands run


def test_an_installed_command_outside_the_checkout_says_where_the_bundles_are_missing(tmp_path, capsys, monkeypatch):
    from common.benchmark import accuracy
    from common.cli import BUNDLES_ENV

    monkeypatch.delenv(BUNDLES_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "msd_hippocampus").mkdir(parents=True)
    code = accuracy.main(["--dataset", "msd_hippocampus", "--data_root", str(tmp_path / "data"), "--output_dir", "out"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.splitlines() == [err] and err.startswith("error: no bundles folder: give --bundles")
    assert not (tmp_path / "out").exists()
