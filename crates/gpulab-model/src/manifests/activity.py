#!/usr/bin/env python3
"""gpulab's activity reporter: runs inside the workspace container.

The workspace's setup script starts `python3 activity.py serve`; the container's preStop hook runs
`python3 activity.py prestop`. The autostop agent (agent.py, in its own pod) polls `GET /activity` every
30 s to decide whether the user is active, and sends `POST /notice` to show the user a warning. Standard
library only (Python >= 3.8): the workspace image has no extra packages for it.

Where the behaviour comes from:
- SSH sessions: OpenSSH's per-session process titles (`sshd: user@pts/0`, `sshd: user@notty`; OpenSSH
  9.8 split the per-session binary out as `sshd-session`, https://www.openssh.com/txt/release-9.8),
  read from /proc/PID/cmdline (proc(5)).
- Jupyter: the Jupyter Server REST API, `GET /api/kernels` (each kernel's `execution_state`) and
  `GET /api/status` (`last_activity`), token auth as `Authorization: token <t>`
  (https://jupyter-server.readthedocs.io/en/latest/developers/rest-api.html). Both with
  `?no_track_activity=1`: Jupyter Server counts every authenticated API request as activity
  (`APIHandler.update_api_activity`), so without it this poll would keep the lab "active" forever.
- vLLM: the Prometheus metrics `vllm:num_requests_running` and `vllm:num_requests_waiting` on `/metrics`
  (https://docs.vllm.ai/en/latest/design/metrics.html; text format:
  https://prometheus.io/docs/instrumenting/exposition_formats/).
- Slurm: `squeue -h -o %i` (https://slurm.schedmd.com/squeue.html).
- GPUs: `nvidia-smi --query-compute-apps=pid` and `--query-gpu=utilization.gpu`
  (`nvidia-smi --help-query-compute-apps`, `--help-query-gpu`).
- Notices: util-linux `wall` (wall(1)) so every terminal sees them; a file a training script can poll.
- prestop: a Kubernetes container preStop hook
  (https://kubernetes.io/docs/concepts/containers/container-lifecycle-hooks/), run before the container
  is stopped, e.g. on a node drain after an EC2 spot interruption notice.
"""

from __future__ import annotations

import argparse
import datetime
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

DEFAULT_PORT = 9102
DEFAULT_TOKEN_FILE = "/etc/gpulab/activity/token"
DEFAULT_NOTICE_FILE = "/workspace/.gpulab/notice"
DEFAULT_SHUTDOWN_FILE = "/workspace/.gpulab/shutdown.json"
SUBPROCESS_TIMEOUT = 10.0
HTTP_TIMEOUT = 5.0
# The probes run side by side; one that has not answered by then is an error in the report. The agent
# waits 10 s for the report and counts no report as idle: a hung nvidia-smi must not hide an SSH session.
REPORT_DEADLINE = 8.0
SHUTDOWN_REASON = ("the pod is being stopped (node drain: spot interruption, node replacement, "
                   "or a stop)")
SHUTDOWN_TEXT = ("gpulab: this workspace is stopping now (its pod is being stopped: a node drain after "
                 "a spot interruption, a node replacement, or a stop). Save your work and checkpoint "
                 "now. /workspace is kept; unless the lab was stopped, the workspace comes back on a new "
                 "node by itself.")


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


# -- probes --------------------------------------------------------------------------------------


def count_ssh_sessions(proc_root: str) -> int:
    """OpenSSH retitles each session's process `sshd: USER@TTY` (`sshd-session: ...` from 9.8 on); the
    listener (`sshd: /usr/sbin/sshd -D [listener] ...`) and pre-auth/monitor processes have no `@`."""
    count = 0
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, entry, "cmdline"), "rb") as f:
                raw = f.read()
        except OSError:
            continue  # the process ended while we looked, or is not ours to read
        title = " ".join(p.decode("utf-8", "replace") for p in raw.split(b"\0") if p)
        if (title.startswith("sshd: ") or title.startswith("sshd-session: ")) and "@" in title:
            count += 1
    return count


class Refused(Exception):
    """Nothing listens there: the service is not running, which is not a probe error."""


def http_get(url: str, headers: Optional[Dict[str, str]] = None) -> bytes:
    """GET url; `Refused` when the connection is refused."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            body: bytes = resp.read()
            return body
    except urllib.error.HTTPError:
        raise
    except urllib.error.URLError as e:
        if isinstance(e.reason, ConnectionRefusedError):
            raise Refused(url) from e
        raise
    except ConnectionRefusedError as e:
        raise Refused(url) from e


def parse_iso8601(text: str) -> int:
    """Epoch seconds of an ISO 8601 time with `Z` or an offset (Jupyter writes
    `2024-12-05T06:40:44.123456Z`); Python 3.8's fromisoformat takes neither `Z` nor 9 fraction digits."""
    s = text.strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    if "." in s:
        head, _, rest = s.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        s = head + "." + (digits + "000000")[:6] + rest
    dt = datetime.datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)  # Jupyter writes UTC
    return int(dt.timestamp())


def _jupyter_headers() -> Dict[str, str]:
    token = os.environ.get("JUPYTER_TOKEN")
    return {"Authorization": "token " + token} if token else {}


def jupyter_busy_kernels() -> int:
    base = _env("GPULAB_JUPYTER_URL", "http://127.0.0.1:8888").rstrip("/")
    try:
        kernels = json.loads(http_get(base + "/api/kernels?no_track_activity=1", _jupyter_headers()))
    except Refused:
        return 0
    return sum(1 for k in kernels if isinstance(k, dict) and k.get("execution_state") == "busy")


def jupyter_last_activity() -> Optional[int]:
    base = _env("GPULAB_JUPYTER_URL", "http://127.0.0.1:8888").rstrip("/")
    try:
        status = json.loads(http_get(base + "/api/status?no_track_activity=1", _jupyter_headers()))
    except Refused:
        return None
    last = status.get("last_activity") if isinstance(status, dict) else None
    return parse_iso8601(last) if isinstance(last, str) and last else None


VLLM_METRICS = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def sum_vllm_requests(text: str) -> float:
    """Sum every sample of the running/waiting request gauges (one per model/engine label set)."""
    total = 0.0
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        end = 0
        while end < len(line) and line[end] not in "{ \t":
            end += 1
        if line[:end] not in VLLM_METRICS:
            continue
        rest = line[end:]
        if rest.startswith("{"):
            # Skip the label set; a label value may hold `}` or spaces inside its quotes.
            i, quoted = 1, False
            while i < len(rest):
                c = rest[i]
                if quoted and c == "\\":
                    i += 2
                    continue
                if c == '"':
                    quoted = not quoted
                elif c == "}" and not quoted:
                    break
                i += 1
            rest = rest[i + 1:]
        fields = rest.split()
        if fields:
            total += float(fields[0])
    return total


def vllm_requests() -> int:
    base = _env("GPULAB_VLLM_URL", "http://127.0.0.1:8000").rstrip("/")
    try:
        text = http_get(base + "/metrics").decode("utf-8", "replace")
    except Refused:
        return 0
    return int(round(sum_vllm_requests(text)))


def run_command(argv: List[str]) -> str:
    """Run a command with the probe timeout; its stdout, or an exception that says what failed."""
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=SUBPROCESS_TIMEOUT)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"exit status {done.returncode}" + (f": {detail[-1]}" if detail else ""))
    return done.stdout


def slurm_jobs() -> int:
    squeue = shutil.which("squeue")
    if squeue is None:
        return 0  # no Slurm in this workspace
    return sum(1 for line in run_command([squeue, "-h", "-o", "%i"]).splitlines() if line.strip())


def gpu_processes(nvidia_smi: str) -> int:
    out = run_command([nvidia_smi, "--query-compute-apps=pid", "--format=csv,noheader"])
    return sum(1 for line in out.splitlines() if line.strip())


def gpu_utilization(nvidia_smi: str) -> Optional[float]:
    out = run_command([nvidia_smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"])
    values: List[float] = []
    for line in out.splitlines():
        try:
            values.append(float(line.strip()))
        except ValueError:
            continue  # `[N/A]` on a GPU that does not report it
    if not values:
        raise RuntimeError("no GPU reported its utilisation")
    return max(values)


def collect(started_at: int, last_shutdown: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """One activity report. Each probe is isolated (an exception is an `errors` entry and a zero/null
    value, never fatal), and they run concurrently within REPORT_DEADLINE."""
    proc_root = _env("GPULAB_PROC_ROOT", "/proc")
    # (report key, name for errors, probe, value when it fails)
    probes: List[Tuple[str, str, Callable[[], Any], Any]] = [
        ("ssh_sessions", "ssh", lambda: count_ssh_sessions(proc_root), 0),
        ("busy_kernels", "jupyter kernels", jupyter_busy_kernels, 0),
        ("jupyter_last_activity", "jupyter status", jupyter_last_activity, None),
        ("slurm_jobs", "squeue", slurm_jobs, 0),
        ("vllm_requests", "vllm", vllm_requests, 0),
    ]
    errors: List[str] = []
    report: Dict[str, Any] = {"started_at": started_at, "now": int(time.time())}
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        errors.append("nvidia-smi: not found")
        report.update(gpu_processes=0, gpu_utilization=None)
    else:
        smi = nvidia_smi
        probes.append(("gpu_processes", "nvidia-smi", lambda: gpu_processes(smi), 0))
        probes.append(("gpu_utilization", "nvidia-smi", lambda: gpu_utilization(smi), None))

    results: Dict[str, Tuple[Any, Optional[str]]] = {}

    def run(key: str, name: str, fn: Callable[[], Any], fallback: Any) -> None:
        try:
            results[key] = (fn(), None)
        except Exception as e:  # noqa: BLE001 - a probe must not break the report
            results[key] = (fallback, f"{name}: {_describe(e)}")

    threads = [threading.Thread(target=run, args=p, daemon=True) for p in probes]
    for t in threads:
        t.start()
    deadline = time.monotonic() + REPORT_DEADLINE
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for key, name, _, fallback in probes:
        value, error = results.get(key, (fallback, f"{name}: no answer within {REPORT_DEADLINE:g}s"))
        report[key] = value
        if error is not None:
            errors.append(error)
    report["last_shutdown"] = last_shutdown
    report["errors"] = errors
    return {k: report[k] for k in ("started_at", "now", "ssh_sessions", "busy_kernels",
                                   "jupyter_last_activity", "slurm_jobs", "vllm_requests", "gpu_processes",
                                   "gpu_utilization", "last_shutdown", "errors")}


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    if isinstance(e, subprocess.TimeoutExpired):
        return f"timed out after {e.timeout:g}s"
    return str(e) or type(e).__name__


# -- notices -------------------------------------------------------------------------------------


def write_atomically(path: str, text: str) -> None:
    """Temp file + rename in the same directory: a reader sees the old content or the new, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the user's scripts may run as another uid
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_NOTICE_LOCK = threading.Lock()


def notify(kind: str, text: str, now: Optional[float] = None) -> None:
    """Show a notice: the notice file (latest only), its `.log` (all), and `wall` to every terminal.
    Raises OSError when the files cannot be written; `wall` failing is ignored."""
    record = {"at": int(time.time() if now is None else now), "kind": kind, "text": text}
    line = json.dumps(record)
    path = _env("GPULAB_NOTICE_FILE", DEFAULT_NOTICE_FILE)
    failure: Optional[OSError] = None
    with _NOTICE_LOCK:
        try:
            write_atomically(path, line + "\n")
            with open(path + ".log", "a") as log:
                log.write(line + "\n")
        except OSError as e:
            failure = e
    wall = shutil.which("wall")
    if wall is not None:
        try:
            # The message on stdin: an argument that names a readable file would be read as that file.
            subprocess.run([wall], input=text + "\n", text=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=SUBPROCESS_TIMEOUT)
        except (OSError, subprocess.SubprocessError):
            pass
    if failure is not None:
        raise failure


def read_last_shutdown() -> Optional[Dict[str, Any]]:
    try:
        with open(_env("GPULAB_SHUTDOWN_FILE", DEFAULT_SHUTDOWN_FILE)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def prestop() -> int:
    """The preStop hook: record why the pod stops, tell the user, then give a training script polling
    the notice file time to checkpoint before kubelet sends SIGTERM."""
    now = int(time.time())
    try:
        write_atomically(_env("GPULAB_SHUTDOWN_FILE", DEFAULT_SHUTDOWN_FILE),
                         json.dumps({"at": now, "reason": SHUTDOWN_REASON}) + "\n")
    except OSError as e:
        sys.stderr.write(f"activity prestop: writing the shutdown file: {e}\n")
    try:
        notify("shutdown", SHUTDOWN_TEXT, now)
    except OSError as e:
        sys.stderr.write(f"activity prestop: writing the notice: {e}\n")
    try:
        seconds = float(_env("GPULAB_PRESTOP_SECONDS", "20"))
    except ValueError:
        seconds = 20.0
    if seconds > 0:
        time.sleep(seconds)
    return 0


# -- HTTP server ---------------------------------------------------------------------------------


def read_token() -> Optional[str]:
    try:
        with open(_env("GPULAB_ACTIVITY_TOKEN_FILE", DEFAULT_TOKEN_FILE)) as f:
            token = f.read().strip()
    except OSError:
        return None
    return token or None


class Handler(BaseHTTPRequestHandler):
    server_version = "gpulab-activity/1"
    started_at = 0
    last_shutdown: Optional[Dict[str, Any]] = None

    def _send(self, code: int, body: Optional[Dict[str, Any]] = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _authorized(self) -> bool:
        # Re-read per request: the Secret behind the file may be rotated without a restart.
        token = read_token()
        if token is None:
            self._send(503, {"error": "no activity token configured"})
            return False
        header = self.headers.get("Authorization") or ""
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            self._send(401, {"error": "unauthorized"})
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._authorized():
            return
        if self.path.split("?")[0] == "/activity":
            self._send(200, collect(self.started_at, self.last_shutdown))
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        if self.path.split("?")[0] != "/notice":
            self._send(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            kind, text = body["kind"], body["text"]
            if not isinstance(kind, str) or not isinstance(text, str):
                raise TypeError("kind and text must be strings")
        except (ValueError, KeyError, TypeError) as e:
            self._send(400, {"error": f"expected {{\"kind\": ..., \"text\": ...}}: {e}"})
            return
        try:
            notify(kind, text)
        except OSError as e:
            self._send(500, {"error": f"writing the notice: {e}"})
            return
        self._send(204)

    def do_PUT(self) -> None:  # noqa: N802
        if self._authorized():
            self._send(405, {"error": "method not allowed"})

    do_DELETE = do_PUT
    do_PATCH = do_PUT

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        # The agent polls every 30 s: log only what went wrong, and never to stdout.
        if isinstance(code, int) and code >= 400:
            super().log_request(code, size)


def serve(host: str, port: int) -> None:
    Handler.started_at = int(time.time())
    Handler.last_shutdown = read_last_shutdown()  # written by the previous pod's prestop
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    print(f"gpulab activity reporter listening on {host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="activity.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve GET /activity and POST /notice")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    s.add_argument("--host", default="0.0.0.0")
    sub.add_parser("probe", help="print one activity report")
    sub.add_parser("prestop", help="the container's preStop hook")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port)
        return 0
    if args.command == "probe":
        print(json.dumps(collect(int(time.time()), read_last_shutdown())))
        return 0
    return prestop()


if __name__ == "__main__":
    sys.exit(main())
