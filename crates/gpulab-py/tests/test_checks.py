"""`gpulab.test_local()`: the GPU checks on this machine, with no lab. The machines the suite runs on
have no GPU: every check must say what is missing, and the report must not pass."""

import importlib.util
import os
import shutil
import sys

import pytest

import gpulab


def test_without_a_gpu_every_check_says_what_is_missing(tmp_path):
    if shutil.which("nvidia-smi") or importlib.util.find_spec("torch"):
        pytest.skip("this machine has nvidia-smi or PyTorch; the test is about one without")
    report = gpulab.test_local(vllm_model=None, nccl=False, repeats=3)
    assert not report.passed
    assert "this machine" in repr(report)
    data = report.to_dict()
    assert (data["instance"], data["gpu_model"], data["thresholds"]) == (None, None, None)
    status = {check["name"]: check["status"] for check in data["checks"]}
    assert status == {
        "nvidia-smi": "unavailable",
        "pytorch cuda": "unavailable",
        "matmul fp16": "unavailable",
        "matmul bf16": "unavailable",
        "matmul fp32": "unavailable",
        "memory bandwidth": "unavailable",
        "nccl all-reduce": "skipped",
        "vllm generate": "skipped",
    }
    detail = dict((name, text) for name, _, text in report.rows)
    assert detail["nvidia-smi"].startswith("nvidia-smi not found on PATH: no NVIDIA driver on this machine")
    assert "No module named 'torch'" in detail["pytorch cuda"]

    # The interpreter given is the one that runs the checks; its errors name the argument.
    explicit = gpulab.test_local(python=sys.executable, vllm_model=None, nccl=False, repeats=3)
    assert [row[1] for row in explicit.rows] == [row[1] for row in report.rows]
    with pytest.raises(ValueError, match="python .*no such file"):
        gpulab.test_local(python=tmp_path / "no-python")
    not_executable = tmp_path / "python"
    not_executable.write_text("")
    os.chmod(not_executable, 0o644)
    with pytest.raises(ValueError, match="not an executable file"):
        gpulab.test_local(python=not_executable)
