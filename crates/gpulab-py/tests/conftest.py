"""Fixtures for driving labs from Python against the Kubernetes emulator (`kube-sandbox`, built by
scripts/test) as an existing cluster, and an echo server for port-forward routes."""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Dict, Iterator, List, Optional

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
# Read before any test points HOME elsewhere.
TARGET_DIR = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or pathlib.Path.home() / ".cache" / "gpulab-target")
ORIGINAL_VARS = ["CLUSTER_NAME", "AWS_REGION", "AWS_DEFAULT_REGION", "NODE_TYPE", "MIN_NODES", "MAX_NODES",
                 "DESIRED_NODES", "POD_NAME", "SSH_KEY", "KUBECONFIG"]


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


class EchoServer:
    """A TCP server on 127.0.0.1 that sends back what it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


class Sandbox:
    """A running kube-sandbox: its kubeconfig and its process."""

    def __init__(self, proc: subprocess.Popen, kubeconfig: pathlib.Path, url: str) -> None:
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


def start_sandbox(directory: pathlib.Path, gpu_nodes: int = 1, ports: Optional[Dict[int, int]] = None,
                  pod: str = "gpulab/gpu-dev-pod-0") -> Sandbox:
    """Start kube-sandbox with `gpu_nodes` GPU nodes, routing port-forwards to `pod`'s ports to local
    ports (`{pod_port: local_port}`), and wait until it serves."""
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
        if line.startswith("Kubernetes API emulator at "):
            url = line.split()[4]
            # Keep draining stderr so the emulator never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return Sandbox(proc, kubeconfig, url)
    proc.kill()
    raise RuntimeError(f"kube-sandbox did not start: {''.join(lines)}")


@pytest.fixture
def user(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A user with a fresh home, lab store and working directory, and none of the scripts' variables."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GPULAB_HOME", str(home / ".local" / "share" / "gpulab"))
    for var in ORIGINAL_VARS:
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def sandbox(user: pathlib.Path, echo: EchoServer) -> Iterator[Sandbox]:
    """kube-sandbox with one GPU node; the workspace pod's ports 22 and 8888 reach the echo server."""
    sb = start_sandbox(user, ports={22: echo.port, 8888: echo.port})
    yield sb
    sb.stop()


@pytest.fixture
def stuck_sandbox(user: pathlib.Path) -> Iterator[Sandbox]:
    """kube-sandbox with no GPU node: the workspace pod stays Pending forever."""
    sb = start_sandbox(user, gpu_nodes=0)
    yield sb
    sb.stop()
