"""Fixtures for the autostop programs (crates/gpulab-model/src/manifests/{agent,activity}.py): the modules
themselves, the Kubernetes emulator (`kube-sandbox`), a fake activity reporter that records the
notices it is sent, and moto's server for the EKS node-group target.

Time never passes for real: the agent's ticks take `now` as an argument (`tick --now` on the CLI)."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import types
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "crates" / "gpulab-testkit" / "python"))
import kube_sandbox  # noqa: E402  (the shared launcher, found through the path above)

AUTOSTOP = REPO / "crates" / "gpulab-model" / "src" / "manifests"
AGENT_PY = AUTOSTOP / "agent.py"
ACTIVITY_PY = AUTOSTOP / "activity.py"
# A fixed moment for the labs' clocks (2027-01-15 08:00 UTC); the ticks go from there.
T0 = 1_800_000_000
MINUTE = 60
HOUR = 3600
NAMESPACE = "gpulab"
STATE_NAME = "gpu-dev-pod-autostop-state"
LAB = "gpu-learning-cluster"
LAB_ID = "0123456789abcdef"
# The interpreter for the programs' CLIs: the test's own, or another one to check that they run there
# (they promise Python >= 3.8; the agent's image has 3.12).
PYTHON = os.environ.get("GPULAB_AUTOSTOP_PYTHON") or sys.executable


def load(path: pathlib.Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # No __pycache__ beside the programs: the Rust side ships that directory's files.
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


agent = load(AGENT_PY, "gpulab_autostop_agent")
activity = load(ACTIVITY_PY, "gpulab_autostop_activity")


def http(method: str, url: str, body: Any = None, headers: Optional[Dict[str, str]] = None,
         content_type: str = "application/json") -> Tuple[int, Any]:
    """A plain urllib request: (status, parsed JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    h = dict(headers or {})
    if data is not None:
        h["Content-Type"] = content_type
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text.decode("utf-8", "replace")


def closed_port() -> int:
    """A local port nothing listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


# -- the Kubernetes emulator ---------------------------------------------------------------------


class Kube(kube_sandbox.KubeSandbox):
    """A running kube-sandbox, driven through its REST API with plain urllib."""

    def call(self, method: str, path: str, body: Any = None,
             content_type: str = "application/json") -> Tuple[int, Any]:
        return http(method, self.url + path, body, content_type=content_type)

    def ok(self, method: str, path: str, body: Any = None,
           content_type: str = "application/json") -> Any:
        status, answer = self.call(method, path, body, content_type)
        assert status < 300, (method, path, status, answer)
        return answer

    def create_namespace(self, name: str) -> None:
        self.ok("POST", "/api/v1/namespaces", {"metadata": {"name": name}})

    def create_configmap(self, namespace: str, name: str) -> None:
        self.ok("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})

    def create_statefulset(self, namespace: str, name: str, replicas: int = 1) -> None:
        labels = {"app": name}
        self.ok("POST", f"/apis/apps/v1/namespaces/{namespace}/statefulsets", {
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "workspace", "image": "busybox"}]}}}})

    def replicas(self, namespace: str, name: str) -> int:
        sts = self.ok("GET", f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}")
        return int(sts["spec"].get("replicas", 1))

    def set_replicas(self, namespace: str, name: str, replicas: int) -> None:
        """What `gpulab start`/`stop` do to the workspace (through the StatefulSet itself)."""
        self.ok("PATCH", f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}",
                {"spec": {"replicas": replicas}}, "application/merge-patch+json")

    def stored_state(self, namespace: str = NAMESPACE, name: str = STATE_NAME) -> Optional[Dict[str, Any]]:
        cm = self.ok("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        text = (cm.get("data") or {}).get("state.json")
        return json.loads(text) if text else None

    def has_scale_subresource(self) -> bool:
        """Whether the emulator serves `statefulsets/{name}/scale` (a probe StatefulSet of its own)."""
        self.create_namespace("scale-probe")
        self.create_statefulset("scale-probe", "probe")
        status, _ = self.call("GET", "/apis/apps/v1/namespaces/scale-probe/statefulsets/probe/scale")
        return status == 200


def start_sandbox(directory: pathlib.Path) -> Kube:
    """kube-sandbox with one GPU node."""
    sandbox = kube_sandbox.start(directory, gpu_nodes=1, cls=Kube)
    assert isinstance(sandbox, Kube)
    return sandbox


@pytest.fixture
def kube(tmp_path: pathlib.Path) -> Iterator[Kube]:
    sb = start_sandbox(tmp_path)
    yield sb
    sb.stop()


_SCALE: Dict[str, bool] = {}
SCALE_MISSING = ("kube-sandbox does not serve statefulsets/{name}/scale yet (GET an autoscaling/v1 Scale, "
                 "PATCH merge sets spec.replicas): the agent observes and stops a statefulset target "
                 "through it")


@pytest.fixture
def scale_supported(kube: Kube) -> bool:
    if "ok" not in _SCALE:
        _SCALE["ok"] = kube.has_scale_subresource()
    return _SCALE["ok"]


@pytest.fixture
def needs_scale(scale_supported: bool, request: pytest.FixtureRequest) -> None:
    """For a test whose outcome depends on the scale subresource: expected to fail while the emulator
    lacks it (and a plain test once it has it)."""
    if not scale_supported:
        request.applymarker(pytest.mark.xfail(reason=SCALE_MISSING, strict=False))


# -- the fake activity reporter ------------------------------------------------------------------


def idle_report(started_at: int = T0 - HOUR) -> Dict[str, Any]:
    return {"started_at": started_at, "now": 0, "ssh_sessions": 0, "busy_kernels": 0,
            "jupyter_last_activity": None, "slurm_jobs": 0, "vllm_requests": 0, "gpu_processes": 0,
            "gpu_utilization": 3.0, "last_shutdown": None, "errors": ["nvidia-smi: not found"]}


class FakeReporter:
    """Answers `GET /activity` with `self.report` and records `POST /notice` bodies, behind the same
    bearer token check as activity.py."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.report = idle_report()
        self.notices: List[Dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != "Bearer " + fake.token:
                    self._reply(401, {"error": "unauthorized"})
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802
                if self._authorized():
                    self._reply(200, dict(fake.report)) if self.path == "/activity" else self._reply(404)

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorized():
                    return
                length = int(self.headers.get("Content-Length") or 0)
                fake.notices.append(json.loads(self.rfile.read(length)))
                self._reply(204)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> List[str]:
        return [n["kind"] for n in self.notices]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def reporter() -> Iterator[FakeReporter]:
    fake = FakeReporter("s3cret-activity-token")
    yield fake
    fake.close()


# -- a lab for the agent -------------------------------------------------------------------------


class Lab:
    """The agent's inputs for one lab: settings file, token file, environment; and ways to tick."""

    def __init__(self, tmp: pathlib.Path, kube: Kube, reporter: FakeReporter, target: Dict[str, str],
                 **settings: Any) -> None:
        self.kube = kube
        self.reporter = reporter
        self.settings_file = tmp / "settings.json"
        token_file = tmp / "activity-token"
        token_file.write_text(reporter.token + "\n")
        self.settings: Dict[str, Any] = {
            "lab": LAB, "lab_id": LAB_ID, "idle_seconds": 1800, "budget_usd": None,
            "idle_per_hour": 0.0, "node_per_hour": 0.0, "gpu_busy_percent": 10, "warn_seconds": 300,
            "spent_usd": 0.0, "spent_at": T0, "target": target, "activity_url": reporter.url,
            "state": {"namespace": NAMESPACE, "name": STATE_NAME},
        }
        self.settings.update(settings)
        self.write_settings()
        self.env: Dict[str, str] = {
            "GPULAB_AUTOSTOP_SETTINGS": str(self.settings_file),
            "GPULAB_ACTIVITY_TOKEN_FILE": str(token_file),
            "GPULAB_KUBE_URL": kube.url,
        }

    def write_settings(self) -> None:
        self.settings_file.write_text(json.dumps(self.settings))

    def tick(self, at: float) -> Dict[str, Any]:
        """One tick through the module, by a fresh agent (as each `tick` process would be): the state
        goes through the ConfigMap."""
        state: Dict[str, Any] = agent.Agent(self.env).tick(at)
        return state

    def tick_cli(self, at: float) -> Dict[str, Any]:
        """One tick through the CLI: `python3 agent.py tick --now AT`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GPULAB_", "KUBERNETES_"))}
        env.update(self.env)
        done = subprocess.run([PYTHON, str(AGENT_PY), "tick", "--now", str(at)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        state: Dict[str, Any] = json.loads(done.stdout)
        return state


@pytest.fixture
def statefulset_lab(tmp_path: pathlib.Path, kube: Kube, reporter: FakeReporter) -> Lab:
    """A lab whose target is the workspace StatefulSet `gpulab/gpu-dev-pod` (replicas 1), with its empty
    state ConfigMap, idle autostop after 30 minutes, no budget."""
    kube.create_namespace(NAMESPACE)
    kube.create_configmap(NAMESPACE, STATE_NAME)
    kube.create_statefulset(NAMESPACE, "gpu-dev-pod", 1)
    return Lab(tmp_path, kube, reporter, {"kind": "statefulset", "namespace": NAMESPACE, "name": "gpu-dev-pod"})
