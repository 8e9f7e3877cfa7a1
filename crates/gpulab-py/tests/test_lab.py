"""The lab lifecycle driven from Python against the Kubernetes emulator as an existing cluster: up with
progress, status, exec, copies, forwards, Jupyter, cost, the async variants, down; errors as classes;
interrupting a wait; the default notebook display."""

import _thread
import asyncio
import socket
import sys
import threading
import time
import types

import pytest

import gpulab


def roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_lifecycle_against_an_existing_cluster(sandbox, user):
    lab = gpulab.Lab(name="pylab", kubeconfig=sandbox.kubeconfig)
    assert lab.name == "pylab"
    assert lab.plan()["instance"]["name"] == "g4dn.xlarge"

    events = []
    report = lab.up(progress=events.append)
    assert report["workspace"]["ready"], report
    assert report["workspace"]["pod"] == "gpu-dev-pod-0"
    assert isinstance(report["elapsed"], float)
    finished = [e["step"] for e in events if e["event"] == "step-finished"]
    assert "preflight" in finished and "wait for the workspace" in finished, events
    assert all(isinstance(e["elapsed"], float) for e in events if e["event"] == "step-finished")

    assert [summary["name"] for summary in gpulab.labs()] == ["pylab"]
    status = lab.status()
    assert status["cluster_error"] is None
    assert status["cluster"]["workspace"]["ready"]
    assert gpulab.Lab.load("pylab").status()["cluster"]["workspace"]["pod"] == "gpu-dev-pod-0"

    # exec: a shell string, an argv list with stdin, a timeout.
    result = lab.exec("echo hello; echo oops >&2; exit 3")
    assert (result.stdout, result.stderr, result.exit_code, result.ok) == ("hello\n", "oops\n", 3, False)
    assert lab.exec(["cat"], stdin="piped in").stdout == "piped in"
    assert lab.exec("echo $GREETING", env={"GREETING": "hi"}).stdout == "hi\n"
    pod_dir = lab.exec("pwd").stdout.strip()

    # copies both ways (the emulator's pod runs in a sandbox directory on this machine).
    local = user / "train.py"
    local.write_text("print('hi')\n")
    # (The pod's port 22 here is an echo server, not sshd: copies go through the API server's exec.)
    copy_events = []
    stats = lab.copy_to(local, f"{pod_dir}/train.py", progress=copy_events.append, via="kube")
    assert stats["files"] == 1 and stats["bytes"] == len("print('hi')\n")
    assert lab.exec(["cat", f"{pod_dir}/train.py"]).stdout == "print('hi')\n"
    back = user / "back.py"
    lab.copy_from(f"{pod_dir}/train.py", back, via="kube")
    assert back.read_text() == "print('hi')\n"
    # Globs and lists, as `gpulab cp` takes them.
    (user / "a.csv").write_text("a")
    (user / "b.csv").write_text("b")
    lab.exec(f"mkdir -p {pod_dir}/csv")
    stats = lab.copy_to(str(user / "*.csv"), f"{pod_dir}/csv/", via="kube")
    assert stats["files"] == 2
    got = user / "got"
    got.mkdir()
    lab.copy_from([f"{pod_dir}/csv/a.csv", f"{pod_dir}/csv/b.csv"], got, via="kube")
    assert sorted(p.name for p in got.iterdir()) == ["a.csv", "b.csv"]
    with pytest.raises(ValueError):
        lab.copy_to(local, "/x", via="scp")

    # a forward as a context manager: open inside, closed after.
    with lab.forward(22) as fwd:
        assert fwd.open and fwd.remote_port == 22 and fwd.local_port > 0
        assert roundtrip(fwd.local_port, b"SSH-2.0-probe\r\n") == b"SSH-2.0-probe\r\n"
        assert roundtrip(fwd.local_port, b"again") == b"again"
        assert fwd.connections == 2
    assert not fwd.open
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", fwd.local_port), timeout=2).close()

    # Jupyter: the token from the lab's secret, port 8888 forwarded until close().
    url = lab.jupyter_url()
    assert url.startswith("http://127.0.0.1:") and "/lab?token=" in url
    token = url.split("token=")[1]
    assert len(token) >= 32
    port = int(url.split(":")[2].split("/")[0])
    assert lab.jupyter_url() == url, "the forward is reused"
    assert roundtrip(port, b"GET /api HTTP/1.0\r\n\r\n") == b"GET /api HTTP/1.0\r\n\r\n"
    lab.close()

    # vLLM's benchmark runs in the pod (here: on this machine); with no server on the port, the report
    # says so rather than inventing numbers.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        idle_port = probe.getsockname()[1]
    bench = lab.vllm_bench(port=idle_port, requests=4, concurrency=2, max_tokens=8)
    assert bench["completed"] == 0 and bench["output_tokens_per_s"] == 0
    assert "does not answer" in bench["error"], bench
    with pytest.raises(ValueError, match="requests is 0"):
        lab.vllm_bench(requests=0)

    # An existing cluster is its owner's bill: gpulab counts its nodes but prices nothing.
    cost = lab.cost()
    assert cost["nodes"] == 1 and cost["per_hour"] == 0 and not cost["estimate"]["complete"]
    assert "existing cluster" in cost["estimate"]["notes"][0].lower()

    # inside a running event loop (as in a Jupyter cell): plain calls, and the async variants awaited.
    async def in_a_loop():
        plain = lab.exec("echo plain").stdout
        out = await lab.exec_async("echo async")
        status = await lab.status_async()
        return plain, out.stdout, status["cluster"]["workspace"]["ready"]

    assert asyncio.run(in_a_loop()) == ("plain\n", "async\n", True)

    down_events = []
    report = lab.down(progress=down_events.append)
    assert report["leftovers"] == []
    assert any(e["event"] == "step-finished" for e in down_events)
    assert gpulab.labs() == []
    with pytest.raises(gpulab.StateError, match="no lab named"):
        gpulab.Lab.load("pylab")


def test_gpu_checks_and_slurm_report_a_workspace_without_gpus(sandbox, user):
    lab = gpulab.Lab(name="nogpu", kubeconfig=sandbox.kubeconfig)
    lab.up(progress=False)
    # The emulator runs the pod's commands on this machine, which has no NVIDIA driver: every check is
    # unavailable, reported rather than raised.
    report = lab.test_gpu(vllm_model=None, nccl=False, repeats=3)
    assert not report.passed
    data = report.to_dict()
    assert data["instance"] == "g4dn.xlarge" and data["checks"]
    assert len(report.rows) == len(data["checks"])
    with pytest.raises(gpulab.RemoteError, match="no GPU"):
        lab.slurm_setup(install_missing=False)
    lab.down(progress=False)


def test_autostop_stop_and_start_on_an_existing_cluster(sandbox, user):
    lab = gpulab.Lab(name="idle", kubeconfig=sandbox.kubeconfig, autostop="30m")
    lab.up(progress=False)
    assert lab.plan()["autostop"]["summary"] == "after 30m idle"
    assert lab.cost()["autostop"] == "after 30m idle"
    status = lab.status()["autostop"]
    assert status["settings"] == {"idle": 1800, "budget_usd": None}
    # A budget needs prices, which someone else's cluster has none of: refused, naming the setting.
    with pytest.raises(gpulab.SpecError, match="autostop.budget"):
        lab.autostop(budget=5)
    with pytest.raises(gpulab.SpecError, match="outside 10m to 7d"):
        lab.autostop("5m")
    assert lab.autostop("2h")["settings"]["idle"] == 7200
    assert lab.cost()["autostop"] == "after 2h idle"
    assert lab.autostop("off")["next"] == "off"
    # stop and start scale the workspace itself on a cluster gpulab did not make.
    lab.stop(progress=False)
    lab.start(progress=False)
    assert lab.status()["cluster"]["workspace"]["ready"]


def test_errors_map_to_their_classes(user):
    with pytest.raises(gpulab.SpecError) as info:
        gpulab.Lab(node_type="m5.large", kubeconfig="/nonexistent")
    assert isinstance(info.value, gpulab.GpulabError)
    assert [e["field"] for e in info.value.errors] == ["nodes.instance_type"]
    with pytest.raises(TypeError, match="node_typ"):
        gpulab.Lab(node_typ="g5.xlarge")
    with pytest.raises(gpulab.StateError) as state:
        gpulab.Lab.load("nope")
    assert "gpulab ls" in str(state.value), "the CLI's message, hint included"
    # An unreachable cluster: up fails in preflight with the cluster's error.
    lab = gpulab.Lab(name="unreachable", kubeconfig=user / "missing.kubeconfig")
    with pytest.raises(gpulab.GpulabError):
        lab.up(progress=False)


def test_interrupting_a_wait_raises_keyboard_interrupt_promptly(stuck_sandbox):
    lab = gpulab.Lab(name="stuck", kubeconfig=stuck_sandbox.kubeconfig)
    timer = None
    interrupted_at = []

    def on_event(event):
        nonlocal timer
        # Once up is waiting on the pod that can never be scheduled, press Ctrl-C from another thread.
        if event["event"] == "waiting" and timer is None:
            assert "not scheduled" in event["on"], event
            timer = threading.Timer(0.3, lambda: (interrupted_at.append(time.monotonic()), _thread.interrupt_main()))
            timer.start()

    with pytest.raises(KeyboardInterrupt):
        try:
            lab.up(progress=on_event)
        finally:
            if timer is not None:
                timer.join()
    # Raised by the interrupt, not by up's own end (its wait for the pod would last 20 minutes).
    assert interrupted_at, "up ended before the interrupt"
    # The aborted up released the lab's lock: down runs at once.
    assert lab.down(progress=False)["leftovers"] == []


def test_default_progress_is_a_notebook_display_inside_jupyter(sandbox, monkeypatch):
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(repr(obj))

    def display(obj, display_id=False):
        shown.append(repr(obj))
        return Handle()

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())  # type: ignore[attr-defined]
    ipython_display = types.ModuleType("IPython.display")
    ipython_display.display = display  # type: ignore[attr-defined]
    ipython.display = ipython_display  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", ipython_display)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))

    lab = gpulab.Lab(name="notebook", kubeconfig=sandbox.kubeconfig)
    lab.up()
    assert shown, "no display in a notebook"
    assert "✓ preflight" in shown[-1] and "✓ wait for the workspace" in shown[-1]
    lab.down(progress=False)


def test_print_progress_writes_step_lines(capsys):
    for event in [{"event": "step-started", "step": "create VPC"},
                  {"event": "step-finished", "step": "create VPC", "elapsed": 1.25, "already_done": False},
                  {"event": "warning", "message": "no GPU nodes"},
                  {"event": "step-failed", "step": "create node group", "elapsed": 3.0,
                   "error": "create node group: AccessDeniedException: not authorized"}]:
        gpulab.print_progress(event)
    assert capsys.readouterr().out == ("✓ create VPC 1.2s\n! no GPU nodes\n"
                                       "✗ create node group 3.0s: create node group: AccessDeniedException: not authorized\n")


def test_the_notebook_example_runs(sandbox, user):
    import os
    import pathlib
    import subprocess

    example = pathlib.Path(__file__).resolve().parents[3] / "examples" / "python" / "notebook_lab.py"
    env = dict(os.environ, GPULAB_KUBECONFIG=str(sandbox.kubeconfig), GPULAB_LAB="example")
    run = subprocess.run([sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "g4dn.xlarge: $" in out
    assert "workspace gpulab/gpu-dev-pod-0 ready" in out
    assert "hello from the workspace" in out
    assert "down: 0 leftovers" in out
