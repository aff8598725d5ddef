"""The user commands are installed as console scripts beside their ``python -m`` forms (setup.cfg)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path


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
