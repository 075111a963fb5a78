"""The wheel works on its own: built from the tree, installed to a folder, `ftplan --help` runs."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("ftplan-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ftplan/sizing/data/models.json" in names and "ftplan/launcher/cli.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ftplan = ftplan.launcher.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import ftplan, sys; print(ftplan.__file__); from ftplan.launcher.cli import main; main()"
    help_out = subprocess.run([sys.executable, "-c", code, "--help"], env=env, capture_output=True, text=True,
                              cwd=tmp_path)
    assert help_out.returncode == 0, help_out.stderr
    assert str(target) in help_out.stdout.splitlines()[0]
    assert "estimate" in help_out.stdout
    est = subprocess.run([sys.executable, "-c", code, "estimate", "--model", "qwen2.5-7b", "--json"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert est.returncode == 0, est.stderr
