"""Fixtures for driving labs from Python against the Kubernetes emulator (`kube-sandbox`, built by
scripts/test) as an existing cluster, and an echo server for port-forward routes."""

import pathlib
import socket
import sys
import threading
from typing import Dict, Iterator, Optional

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "crates" / "gpulab-testkit" / "python"))
import kube_sandbox  # noqa: E402  (the shared launcher, found through the path above)

ORIGINAL_VARS = ["CLUSTER_NAME", "AWS_REGION", "AWS_DEFAULT_REGION", "NODE_TYPE", "MIN_NODES", "MAX_NODES",
                 "DESIRED_NODES", "POD_NAME", "SSH_KEY", "KUBECONFIG"]


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


Sandbox = kube_sandbox.KubeSandbox


def start_sandbox(directory: pathlib.Path, gpu_nodes: int = 1, ports: Optional[Dict[int, int]] = None) -> Sandbox:
    """kube-sandbox with `gpu_nodes` GPU nodes; port-forwards to the workspace pod's ports reach the
    local ports in `ports` (`{pod_port: local_port}`)."""
    return kube_sandbox.start(directory, gpu_nodes=gpu_nodes, ports=ports)


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
