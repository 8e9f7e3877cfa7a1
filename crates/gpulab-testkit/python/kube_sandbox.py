"""The Kubernetes emulator (`kube-sandbox`, a binary of gpulab-testkit) for Python tests: found, started
and stopped in one place. crates/gpulab-py/tests and tests/autostop import it from their conftest."""

import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time
from typing import Dict, List, Optional

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
# Read at import, before any test points HOME elsewhere.
TARGET_DIR = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or pathlib.Path.home() / ".cache" / "gpulab-target")
READY_LINE = "Kubernetes API emulator at "


def sandbox_binary() -> pathlib.Path:
    """`GPULAB_KUBE_SANDBOX`, else the debug build in the workspace's target directory."""
    explicit = os.environ.get("GPULAB_KUBE_SANDBOX")
    if explicit:
        return pathlib.Path(explicit)
    for candidate in [TARGET_DIR / "debug" / "kube-sandbox", REPO / "target" / "debug" / "kube-sandbox"]:
        if candidate.exists():
            return candidate
    found = shutil.which("kube-sandbox")
    if found:
        return pathlib.Path(found)
    pytest.fail("kube-sandbox not found: `cargo build -p gpulab-testkit --bin kube-sandbox` "
                "(scripts/test does) or set GPULAB_KUBE_SANDBOX")


class KubeSandbox:
    """A running kube-sandbox: its process, its kubeconfig and its API server's URL."""

    def __init__(self, proc: "subprocess.Popen[str]", kubeconfig: pathlib.Path, url: str) -> None:
        self.proc = proc
        self.kubeconfig = kubeconfig
        self.url = url

    def stop(self) -> None:
        if self.proc.poll() is None:
            # SIGINT: the emulator's Ctrl-C path, which removes its sandbox directory.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(directory: pathlib.Path, gpu_nodes: int = 1, ports: Optional[Dict[int, int]] = None,
          pod: str = "gpulab/gpu-dev-pod-0", cls: type = KubeSandbox) -> KubeSandbox:
    """Start kube-sandbox with `gpu_nodes` GPU nodes, its kubeconfig in `directory`, routing
    port-forwards to `pod`'s ports to local ports (`{pod_port: local_port}`), and wait until it serves.
    `cls` is the KubeSandbox subclass to return."""
    kubeconfig = directory / "sandbox.kubeconfig"
    env = dict(os.environ, GPULAB_SANDBOX_GPU_NODES=str(gpu_nodes))
    if ports:
        env["GPULAB_SANDBOX_PORTS"] = ",".join(f"{pod}:{p}=127.0.0.1:{local}" for p, local in ports.items())
    proc = subprocess.Popen([str(sandbox_binary()), str(kubeconfig)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    lines: List[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(READY_LINE):
            url = line.split()[4]
            # Keep draining stderr so the emulator never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return cls(proc, kubeconfig, url)
    proc.kill()
    raise RuntimeError(f"kube-sandbox did not start: {''.join(lines)}")
