"""activity.py, the workspace's activity reporter: its probes against a fake /proc, fake `nvidia-smi`,
`squeue` and `wall` scripts and fake Jupyter and vLLM servers; its HTTP API's auth; notices; preStop."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from conftest import ACTIVITY_PY, PYTHON, T0, activity, closed_port, http

JUPYTER_TOKEN = "jupyter-t0ken"
TOKEN = "s3cret-activity-token"


def write_script(directory: pathlib.Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def fake_proc(root: pathlib.Path) -> pathlib.Path:
    """A /proc with sshd's listener, two SSH sessions (classic and OpenSSH 9.8's sshd-session), a
    privileged monitor and other processes."""
    processes = {
        "1": b"sshd: /usr/sbin/sshd -D -e [listener] 0 of 10-100 startups\0",
        "40": b"sshd: root [priv]\0",
        "41": b"sshd: root@pts/0\0\0\0\0",  # setproctitle pads with NULs
        "52": b"sshd-session: u@notty\0",
        "60": b"/bin/bash\0-l\0",
        "61": b"python3\0train.py\0--user=me@example.com\0",  # an @, but not sshd
        "70": b"",  # a kernel thread
    }
    for pid, cmdline in processes.items():
        (root / pid).mkdir(parents=True)
        (root / pid / "cmdline").write_bytes(cmdline)
    (root / "self").mkdir()
    (root / "99").mkdir()  # a process that ended while we looked: no cmdline
    return root


def iso(epoch: int, offset_hours: int = 0, fraction: str = "") -> str:
    tz = datetime.timezone(datetime.timedelta(hours=offset_hours))
    text = datetime.datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%dT%H:%M:%S") + fraction
    return text + ("Z" if offset_hours == 0 else f"{offset_hours:+03d}:00")


class FakeServices:
    """Jupyter Server (`/api/kernels`, `/api/status`, token auth) and vLLM (`/metrics`) on one port.
    Like Jupyter Server, an authenticated API request without `no_track_activity` is itself activity."""

    def __init__(self, kernels: List[Dict[str, Any]], last_activity: str, metrics: str) -> None:
        services = self
        self.last_activity = last_activity
        self.tracked: List[str] = []  # the API requests Jupyter would have counted as activity

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path, _, query = self.path.partition("?")
                if path == "/metrics":
                    return self._reply(200, metrics.encode(), "text/plain; version=0.0.4")
                if self.headers.get("Authorization") != "token " + JUPYTER_TOKEN:
                    return self._reply(403, b'{"message": "Forbidden"}')
                if "no_track_activity" not in urllib.parse.parse_qs(query):
                    services.tracked.append(path)
                    services.last_activity = iso(int(time.time()))
                if path == "/api/kernels":
                    return self._reply(200, json.dumps(kernels).encode())
                if path == "/api/status":
                    body = {"started": iso(T0 - 7200), "last_activity": services.last_activity, "kernels": 2}
                    return self._reply(200, json.dumps(body).encode())
                self._reply(404, b"{}")

            def _reply(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 2.0
vllm:num_requests_running{engine="1",model_name="odd } name with spaces"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 1.0 1733380000000
vllm:num_requests_swapped{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 7.0
vllm:gpu_cache_usage_perc{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.25
vllm:request_success_total{finished_reason="stop"} 12.0
"""


def base_env(tmp: pathlib.Path, bin_dir: pathlib.Path) -> Dict[str, str]:
    """Only the fake tools on PATH: the machine's own `wall` must not broadcast to real terminals."""
    bin_dir.mkdir(exist_ok=True)
    return {
        "PATH": str(bin_dir),
        "HOME": str(tmp),
        "GPULAB_PROC_ROOT": str(fake_proc(tmp / "proc")),
        "GPULAB_JUPYTER_URL": f"http://127.0.0.1:{closed_port()}",
        "GPULAB_VLLM_URL": f"http://127.0.0.1:{closed_port()}",
        "GPULAB_ACTIVITY_TOKEN_FILE": str(tmp / "token"),
        "GPULAB_NOTICE_FILE": str(tmp / "workspace" / ".gpulab" / "notice"),
        "GPULAB_SHUTDOWN_FILE": str(tmp / "workspace" / ".gpulab" / "shutdown.json"),
        "WALL_LOG": str(tmp / "wall.log"),
    }


def probe_cli(env: Dict[str, str]) -> Dict[str, Any]:
    done = subprocess.run([PYTHON, str(ACTIVITY_PY), "probe"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    report: Dict[str, Any] = json.loads(done.stdout)
    return report


def test_ssh_sessions_are_per_session_sshd_titles(tmp_path: pathlib.Path) -> None:
    assert activity.count_ssh_sessions(str(fake_proc(tmp_path / "proc"))) == 2


def test_probe_of_a_busy_workspace(tmp_path: pathlib.Path) -> None:
    bin_dir = tmp_path / "bin"
    env = base_env(tmp_path, bin_dir)
    write_script(bin_dir, "nvidia-smi", """\
case "$*" in
  *--query-compute-apps=pid*) printf '4242\\n' ;;
  *--query-gpu=utilization.gpu*) printf '3\\n87\\n[N/A]\\n' ;;
  *) exit 2 ;;
esac
""")
    write_script(bin_dir, "squeue", '[ "$*" = "-h -o %i" ] || exit 2\nprintf "17\\n"\n')
    kernels = [{"id": "a", "name": "python3", "execution_state": "busy"},
               {"id": "b", "name": "python3", "execution_state": "idle"}]
    services = FakeServices(kernels, iso(T0 - 300, fraction=".123456"), VLLM_METRICS)
    try:
        env.update(GPULAB_JUPYTER_URL=services.url, GPULAB_VLLM_URL=services.url, JUPYTER_TOKEN=JUPYTER_TOKEN)
        report = probe_cli(env)
    finally:
        services.close()
    assert services.tracked == []  # polling is not activity
    assert report["ssh_sessions"] == 2
    assert report["busy_kernels"] == 1
    assert report["jupyter_last_activity"] == T0 - 300
    assert report["slurm_jobs"] == 1
    assert report["vllm_requests"] == 3  # 2 running + 1 waiting; swapped and the rest do not count
    assert report["gpu_processes"] == 1
    assert report["gpu_utilization"] == 87.0
    assert report["errors"] == []
    assert report["last_shutdown"] is None


def test_probe_of_an_idle_workspace_without_tools(tmp_path: pathlib.Path) -> None:
    """No nvidia-smi, no squeue, Jupyter and vLLM not running (connection refused)."""
    env = base_env(tmp_path, tmp_path / "bin")
    env["GPULAB_PROC_ROOT"] = str(tmp_path / "emptyproc")
    (tmp_path / "emptyproc").mkdir()
    report = probe_cli(env)
    assert {k: report[k] for k in ("ssh_sessions", "busy_kernels", "jupyter_last_activity", "slurm_jobs",
                                   "vllm_requests", "gpu_processes", "gpu_utilization")} == {
        "ssh_sessions": 0, "busy_kernels": 0, "jupyter_last_activity": None, "slurm_jobs": 0,
        "vllm_requests": 0, "gpu_processes": 0, "gpu_utilization": None}
    assert report["errors"] == ["nvidia-smi: not found"]


def test_probe_failures_are_errors_not_fatal(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    env = base_env(tmp_path, bin_dir)
    write_script(bin_dir, "nvidia-smi", "echo \"NVIDIA-SMI has failed because it couldn't communicate "
                                        "with the NVIDIA driver.\" >&2\nexit 9\n")
    write_script(bin_dir, "squeue", "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2\n"
                                    "exit 1\n")
    services = FakeServices([], iso(T0), VLLM_METRICS)
    try:
        env.update(GPULAB_JUPYTER_URL=services.url, JUPYTER_TOKEN="wrong")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        report = activity.collect(T0, None)
    finally:
        services.close()
    assert report["ssh_sessions"] == 2
    assert (report["busy_kernels"], report["jupyter_last_activity"]) == (0, None)
    assert (report["slurm_jobs"], report["gpu_processes"], report["gpu_utilization"]) == (0, 0, None)
    errors = report["errors"]
    assert "jupyter kernels: HTTP 403 Forbidden" in errors
    assert "jupyter status: HTTP 403 Forbidden" in errors
    assert "squeue: exit status 1: slurm_load_jobs error: Unable to contact slurm controller" in errors
    assert [e for e in errors if e.startswith("nvidia-smi: exit status 9: NVIDIA-SMI has failed")] != []
    assert len(errors) == 5  # nvidia-smi twice: processes and utilisation


def test_a_hung_probe_does_not_hold_the_report(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes run side by side within a deadline: a hung nvidia-smi (a GPU fallen off the bus) still
    lets the agent see the SSH sessions before its own 10 s timeout."""
    bin_dir = tmp_path / "bin"
    env = base_env(tmp_path, bin_dir)
    write_script(bin_dir, "nvidia-smi", "exec /bin/sleep 3\n")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(activity, "REPORT_DEADLINE", 0.5)
    started = time.monotonic()
    report = activity.collect(T0, None)
    assert time.monotonic() - started < 2.5
    assert report["ssh_sessions"] == 2
    assert (report["gpu_processes"], report["gpu_utilization"]) == (0, None)
    assert report["errors"] == ["nvidia-smi: no answer within 0.5s"] * 2


def test_time_and_metrics_parsing() -> None:
    assert activity.parse_iso8601(iso(T0, fraction=".123456789")) == T0  # nanoseconds, as Go writes
    assert activity.parse_iso8601(iso(T0, offset_hours=2)) == T0
    assert activity.parse_iso8601(iso(T0, offset_hours=-5, fraction=".5")) == T0
    assert activity.sum_vllm_requests(VLLM_METRICS) == 3.0
    assert activity.sum_vllm_requests("vllm:num_requests_waiting 4\nvllm:num_requests_running_x 9\n") == 4.0


@contextlib.contextmanager
def serving(env: Dict[str, str]) -> Iterator[Tuple[str, List[str]]]:
    """`activity.py serve` on a free port: its URL, and (once stopped) what it wrote to stdout."""
    proc = subprocess.Popen([PYTHON, str(ACTIVITY_PY), "serve", "--host", "127.0.0.1", "--port", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    stdout = [first]
    try:
        assert first.startswith("gpulab activity reporter listening on 127.0.0.1:"), first
        yield f"http://127.0.0.1:{int(first.rsplit(':', 1)[1])}", stdout
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=10)
        stdout.extend(line + "\n" for line in rest.splitlines())


def auth(token: str) -> Dict[str, str]:
    return {"Authorization": "Bearer " + token}


def test_serve_requires_the_token_and_reports(tmp_path: pathlib.Path) -> None:
    env = base_env(tmp_path, tmp_path / "bin")
    token_file = pathlib.Path(env["GPULAB_ACTIVITY_TOKEN_FILE"])
    with serving(env) as (url, stdout):
        # No token file yet: the reporter is not configured.
        assert http("GET", url + "/activity", headers=auth(TOKEN))[0] == 503
        token_file.write_text(TOKEN + "\n")
        assert http("GET", url + "/activity")[0] == 401
        assert http("GET", url + "/activity", headers=auth("nope"))[0] == 401
        assert http("GET", url + "/activity", headers={"Authorization": TOKEN})[0] == 401
        assert http("POST", url + "/notice", {"kind": "x", "text": "y"}, headers=auth("nope"))[0] == 401
        status, report = http("GET", url + "/activity", headers=auth(TOKEN))
        assert status == 200
        assert report["ssh_sessions"] == 2
        assert report["errors"] == ["nvidia-smi: not found"]
        assert report["last_shutdown"] is None
        assert abs(report["started_at"] - report["now"]) < 60
        # The token is re-read per request: a rotated Secret takes effect at once.
        token_file.write_text("rotated\n")
        assert http("GET", url + "/activity", headers=auth(TOKEN))[0] == 401
        assert http("GET", url + "/activity", headers=auth("rotated"))[0] == 200
        assert http("GET", url + "/nothing", headers=auth("rotated"))[0] == 404
    assert not pathlib.Path(env["GPULAB_NOTICE_FILE"]).exists()  # the refused POST wrote nothing
    assert len(stdout) == 1, stdout  # the start line only


def test_notice_file_log_and_wall(tmp_path: pathlib.Path) -> None:
    bin_dir = tmp_path / "bin"
    env = base_env(tmp_path, bin_dir)
    pathlib.Path(env["GPULAB_ACTIVITY_TOKEN_FILE"]).write_text(TOKEN)
    write_script(bin_dir, "wall", 'while IFS= read -r line; do printf "%s\\n" "$line" >> "$WALL_LOG"; done\n')
    notice = pathlib.Path(env["GPULAB_NOTICE_FILE"])
    with serving(env) as (url, _):
        first = {"kind": "autostop", "text": "gpulab: lab x stops at 08:30 UTC (in 5m)"}
        second = {"kind": "budget", "text": "gpulab: lab x has spent $20.00 of its $25.00 budget"}
        assert http("POST", url + "/notice", first, headers=auth(TOKEN)) == (204, None)
        assert http("POST", url + "/notice", second, headers=auth(TOKEN)) == (204, None)
        assert http("POST", url + "/notice", {"kind": "x"}, headers=auth(TOKEN))[0] == 400
    written = json.loads(notice.read_text())
    assert {k: written[k] for k in ("kind", "text")} == second
    assert isinstance(written["at"], int)
    logged = [json.loads(line) for line in (notice.parent / "notice.log").read_text().splitlines()]
    assert [{k: n[k] for k in ("kind", "text")} for n in logged] == [first, second]
    assert pathlib.Path(env["WALL_LOG"]).read_text().splitlines() == [first["text"], second["text"]]
    assert [p.name for p in notice.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_prestop_records_the_shutdown_and_serve_reports_it(tmp_path: pathlib.Path) -> None:
    bin_dir = tmp_path / "bin"
    env = base_env(tmp_path, bin_dir)
    write_script(bin_dir, "wall", 'while IFS= read -r line; do printf "%s\\n" "$line" >> "$WALL_LOG"; done\n')
    env["GPULAB_PRESTOP_SECONDS"] = "0"
    done = subprocess.run([PYTHON, str(ACTIVITY_PY), "prestop"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    shutdown = json.loads(pathlib.Path(env["GPULAB_SHUTDOWN_FILE"]).read_text())
    assert shutdown["reason"] == ("the pod is being stopped (node drain: spot interruption, node replacement, "
                                  "or a stop)")
    assert isinstance(shutdown["at"], int)
    notice = json.loads(pathlib.Path(env["GPULAB_NOTICE_FILE"]).read_text())
    assert notice["kind"] == "shutdown"
    assert "/workspace is kept" in notice["text"] and "new node" in notice["text"]
    log = pathlib.Path(env["GPULAB_NOTICE_FILE"] + ".log").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in log] == ["shutdown"]
    assert "stopping" in pathlib.Path(env["WALL_LOG"]).read_text()
    # The next pod's reporter tells the agent (and `gpulab status`) what happened to the previous one.
    pathlib.Path(env["GPULAB_ACTIVITY_TOKEN_FILE"]).write_text(TOKEN)
    with serving(env) as (url, _):
        status, report = http("GET", url + "/activity", headers=auth(TOKEN))
    assert status == 200
    assert report["last_shutdown"] == shutdown


def test_prestop_waits_for_a_checkpoint(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = base_env(tmp_path, tmp_path / "bin")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GPULAB_PRESTOP_SECONDS", "7")
    slept: List[float] = []
    monkeypatch.setattr(activity.time, "sleep", slept.append)
    assert activity.main(["prestop"]) == 0
    assert slept == [7.0]
    assert os.path.exists(env["GPULAB_SHUTDOWN_FILE"])
