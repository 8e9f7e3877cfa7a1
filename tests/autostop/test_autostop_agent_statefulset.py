"""agent.py with a `statefulset` target against the Kubernetes emulator (kube-sandbox): idle warnings
and stops, activity that keeps a lab on, a restart after a stop, disruption counting, and the state
ConfigMap. Time goes through `tick(now)` / `tick --now`."""

from __future__ import annotations

import pathlib
import subprocess
from typing import Any, Dict, List

import pytest

from conftest import (AGENT_PY, HOUR, LAB, MINUTE, NAMESPACE, PYTHON, STATE_NAME, T0, FakeReporter, Kube, Lab,
                      agent, closed_port)

STS = "gpu-dev-pod"


def errors_besides_scale(state: Dict[str, Any], scale_supported: bool) -> None:
    """No error this tick, except (while kube-sandbox lacks it) the scale subresource's 404."""
    if scale_supported:
        assert state["last_error"] is None
    else:
        parts = [p for p in (state["last_error"] or "").split("; ") if p]
        assert all("/scale" in part for part in parts), state["last_error"]


@pytest.mark.usefixtures("needs_scale")
def test_an_idle_lab_is_warned_then_stopped(statefulset_lab: Lab, kube: Kube, reporter: FakeReporter) -> None:
    """Through the CLI: each tick is its own process, so the state goes through the ConfigMap."""
    lab = statefulset_lab
    first = lab.tick_cli(T0)
    assert first["nodes"] == 1
    assert first["stop_at"] == T0 + 30 * MINUTE
    assert first["active"] == [] and first["last_active"] == T0
    assert first["last_error"] is None
    assert kube.stored_state() == first
    assert reporter.notices == []

    warned = lab.tick_cli(T0 + 25 * MINUTE)
    assert reporter.kinds() == ["autostop"]
    text = reporter.notices[0]["text"]
    assert "2027-01-15 08:00 UTC" in text  # idle since
    assert "2027-01-15 08:30 UTC (in 5m)" in text  # the stop, when and in how long
    assert f"gpulab autostop {LAB} off" in text
    assert "SSH session" in text and "GPU process" in text
    assert warned["idle_warned_for"] == T0
    assert warned["stopped"] is None

    lab.tick_cli(T0 + 27 * MINUTE)
    assert reporter.kinds() == ["autostop"]  # warned once per idle stretch

    stopped = lab.tick_cli(T0 + 30 * MINUTE)
    assert reporter.kinds() == ["autostop", "stopping"]
    assert reporter.notices[1]["text"] == (f"gpulab: stopping lab {LAB} now: idle for 30m. The workspace is "
                                           f"scaled to 0; /workspace is kept. `gpulab start {LAB}` brings it back.")
    assert kube.replicas(NAMESPACE, STS) == 0
    assert stopped["stopped"] == {"at": T0 + 30 * MINUTE, "reason": "idle", "message": "idle for 30m"}
    assert stopped["nodes"] == 0 and stopped["stop_at"] is None
    assert stopped["last_error"] is None

    after = lab.tick_cli(T0 + 31 * MINUTE)
    assert after["stopped"]["reason"] == "idle"
    assert after["seen_stopped_since_start"] is True
    assert after["stop_at"] is None and after["last_active"] == T0 + 31 * MINUTE
    assert kube.stored_state() == after


@pytest.mark.parametrize("activity, reason", [
    ({"ssh_sessions": 1}, "1 SSH session"),
    ({"gpu_processes": 2}, "2 GPU processes"),
    ({"slurm_jobs": 1}, "1 Slurm job"),
    ({"gpu_utilization": 87.0}, "GPU 87% busy"),
    ({"busy_kernels": 1, "vllm_requests": 3}, "1 busy Jupyter kernel"),
])
def test_an_active_lab_is_not_stopped(statefulset_lab: Lab, kube: Kube, reporter: FakeReporter,
                                      scale_supported: bool, activity: Dict[str, Any], reason: str) -> None:
    reporter.report.update(activity)
    lab = statefulset_lab
    for at in (T0, T0 + HOUR, T0 + 2 * HOUR):
        state = lab.tick(at)
    assert kube.replicas(NAMESPACE, STS) == 1
    assert state["stopped"] is None
    assert reason in state["active"]
    assert state["last_active"] == T0 + 2 * HOUR
    assert state["stop_at"] == T0 + 2 * HOUR + 30 * MINUTE
    assert reporter.notices == []
    errors_besides_scale(state, scale_supported)


def test_a_gpu_below_the_threshold_is_idle(statefulset_lab: Lab, reporter: FakeReporter) -> None:
    reporter.report["gpu_utilization"] = 9.0
    lab = statefulset_lab
    lab.tick(T0)
    state = lab.tick(T0 + 10 * MINUTE)
    assert state["active"] == [] and state["last_active"] == T0


def test_jupyter_activity_postpones_the_stop(statefulset_lab: Lab, reporter: FakeReporter,
                                             scale_supported: bool) -> None:
    lab = statefulset_lab
    lab.tick(T0)
    # Someone typed in a notebook at T0+20m (no kernel busy now).
    reporter.report["jupyter_last_activity"] = T0 + 20 * MINUTE
    state = lab.tick(T0 + 25 * MINUTE)
    assert state["last_active"] == T0 + 20 * MINUTE
    assert state["stop_at"] == T0 + 50 * MINUTE
    assert state["active"] == []
    state = lab.tick(T0 + 30 * MINUTE)
    assert state["stopped"] is None and reporter.notices == []
    state = lab.tick(T0 + 45 * MINUTE)
    assert reporter.kinds() == ["autostop"]
    assert state["idle_warned_for"] == T0 + 20 * MINUTE
    # A workspace clock ahead of the agent's never postpones past now.
    reporter.report["jupyter_last_activity"] = T0 + 5 * HOUR
    state = lab.tick(T0 + 46 * MINUTE)
    assert state["last_active"] == T0 + 46 * MINUTE
    errors_besides_scale(state, scale_supported)


@pytest.mark.usefixtures("needs_scale")
def test_an_unreachable_reporter_counts_as_idle(statefulset_lab: Lab, kube: Kube) -> None:
    lab = statefulset_lab
    lab.settings["activity_url"] = f"http://127.0.0.1:{closed_port()}"
    lab.write_settings()
    state = lab.tick(T0)
    assert "activity reporter" in state["last_error"]
    assert state["stop_at"] == T0 + 30 * MINUTE
    state = lab.tick(T0 + 30 * MINUTE)
    assert state["stopped"]["reason"] == "idle"
    assert kube.replicas(NAMESPACE, STS) == 0
    assert "activity reporter" in state["last_error"]  # still failing this tick
    state = lab.tick(T0 + 31 * MINUTE)
    assert state["last_error"] is None  # stopped: the reporter is not asked, nothing failed


@pytest.mark.usefixtures("needs_scale")
def test_a_restart_after_a_stop_clears_it(statefulset_lab: Lab, kube: Kube, reporter: FakeReporter) -> None:
    lab = statefulset_lab
    lab.tick(T0)
    lab.tick(T0 + 25 * MINUTE)
    assert lab.tick(T0 + 30 * MINUTE)["stopped"]["reason"] == "idle"
    assert kube.replicas(NAMESPACE, STS) == 0
    lab.tick(T0 + 35 * MINUTE)
    # The user runs `gpulab start`: the workspace comes back.
    kube.set_replicas(NAMESPACE, STS, 1)
    state = lab.tick(T0 + 40 * MINUTE)
    assert state["stopped"] is None
    assert state["nodes"] == 1
    assert state["last_active"] == T0 + 40 * MINUTE
    assert state["stop_at"] == T0 + 70 * MINUTE
    assert state["idle_warned_for"] is None
    # Idle again: a new warning for the new idle stretch, then a new stop.
    lab.tick(T0 + 65 * MINUTE)
    assert reporter.kinds() == ["autostop", "stopping", "autostop"]
    assert lab.tick(T0 + 70 * MINUTE)["stopped"]["at"] == T0 + 70 * MINUTE


def test_a_restart_while_running_is_a_disruption(statefulset_lab: Lab, reporter: FakeReporter) -> None:
    lab = statefulset_lab
    reporter.report.update(ssh_sessions=1, started_at=T0 - HOUR)
    state = lab.tick(T0)
    assert (state["workspace_started_at"], state["disruptions"]) == (T0 - HOUR, 0)
    # A spot interruption: the workspace pod came back on a new node, the lab never stopped.
    reporter.report["started_at"] = T0 + 3 * MINUTE
    state = lab.tick(T0 + 5 * MINUTE)
    assert (state["workspace_started_at"], state["disruptions"]) == (T0 + 3 * MINUTE, 1)
    state = lab.tick(T0 + 6 * MINUTE)
    assert state["disruptions"] == 1  # the same pod: counted once


@pytest.mark.usefixtures("needs_scale")
def test_a_restart_after_a_stop_is_not_a_disruption(statefulset_lab: Lab, kube: Kube,
                                                    reporter: FakeReporter) -> None:
    lab = statefulset_lab
    reporter.report.update(ssh_sessions=1, started_at=T0 - HOUR)
    lab.tick(T0)
    kube.set_replicas(NAMESPACE, STS, 0)  # `gpulab stop`
    state = lab.tick(T0 + 10 * MINUTE)
    assert state["seen_stopped_since_start"] is True and state["nodes"] == 0
    kube.set_replicas(NAMESPACE, STS, 1)  # `gpulab start`: a new pod
    reporter.report["started_at"] = T0 + 20 * MINUTE
    state = lab.tick(T0 + 25 * MINUTE)
    assert state["workspace_started_at"] == T0 + 20 * MINUTE
    assert state["disruptions"] == 0
    assert state["seen_stopped_since_start"] is False


def test_a_missing_state_configmap_keeps_the_state_in_memory(tmp_path: pathlib.Path, kube: Kube,
                                                             reporter: FakeReporter) -> None:
    kube.create_namespace(NAMESPACE)
    kube.create_statefulset(NAMESPACE, STS, 1)
    lab = Lab(tmp_path, kube, reporter, {"kind": "statefulset", "namespace": NAMESPACE, "name": STS},
              idle_per_hour=1.0, spent_usd=2.0, spent_at=T0)
    running = agent.Agent(lab.env)
    state = running.tick(T0 + HOUR)
    assert f"state ConfigMap {NAMESPACE}/{STATE_NAME} not found" in state["last_error"]
    assert state["spent_usd"] == pytest.approx(3.0)
    state = running.tick(T0 + 2 * HOUR)
    assert state["spent_usd"] == pytest.approx(4.0)  # continued from memory, not from the seed
    assert state["last_error"].count("not found") == 1


def test_the_settings_are_reread_every_tick(statefulset_lab: Lab, reporter: FakeReporter) -> None:
    lab = statefulset_lab
    assert lab.tick(T0)["stop_at"] == T0 + 30 * MINUTE
    lab.settings["idle_seconds"] = 2 * HOUR  # `gpulab autostop <lab> 2h`
    lab.write_settings()
    assert lab.tick(T0 + 40 * MINUTE)["stop_at"] == T0 + 2 * HOUR
    lab.settings["idle_seconds"] = None  # `gpulab autostop <lab> off`
    lab.write_settings()
    state = lab.tick(T0 + 3 * HOUR)
    assert state["stop_at"] is None and state["stopped"] is None and reporter.notices == []


def test_unreadable_settings_exit_1(tmp_path: pathlib.Path) -> None:
    done = subprocess.run([PYTHON, str(AGENT_PY), "tick", "--now", str(T0)],
                          env={"GPULAB_AUTOSTOP_SETTINGS": str(tmp_path / "missing.json"), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "missing.json" in done.stderr and done.stdout == ""


def test_run_logs_a_line_per_tick_and_survives_errors(statefulset_lab: Lab, reporter: FakeReporter,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`agent.py run`: a tick, a line, a sleep; a tick that fails (settings gone) is a line too."""
    lab = statefulset_lab
    for key, value in lab.env.items():
        monkeypatch.setenv(key, value)
    reporter.report["ssh_sessions"] = 1
    lines: List[str] = []
    sleeps: List[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            lab.settings_file.unlink()
        elif len(sleeps) == 2:
            lab.write_settings()
        else:
            raise KeyboardInterrupt  # the only way out

    monkeypatch.setattr(agent.time, "sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        agent.run(agent.Agent(), 30.0, lines.append)
    assert len(lines) == 3 and all(0 < s <= 30 for s in sleeps)
    assert "active=1 SSH session" in lines[0] and "nodes=1" in lines[0]
    assert "error: reading the settings" in lines[1]
    assert "active=1 SSH session" in lines[2]
