"""The shipped stubs match the compiled module (mypy's stubtest), and type-check the example."""

import pathlib
import subprocess
import sys

import gpulab

PACKAGE = pathlib.Path(gpulab.__file__).parent
REPO = pathlib.Path(__file__).resolve().parents[3]


def test_stubs_match_the_module():
    run = subprocess.run([sys.executable, "-m", "mypy.stubtest", "gpulab._gpulab"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_package_and_example_type_check():
    assert (PACKAGE / "py.typed").exists()
    run = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(PACKAGE),
                          str(REPO / "examples" / "python" / "notebook_lab.py")],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
