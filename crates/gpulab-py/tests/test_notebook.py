"""Progress in a real Jupyter kernel (nbclient + ipykernel): a notebook brings a lab up on the Kubernetes
emulator, copies a file into it and takes it down, and its outputs are what a notebook user sees: one
display per call, updated in place, as HTML with plain text beside it; ticks and times for the steps; a
progress bar with bytes, rate and ETA while the copy runs."""

import re
from typing import Any, Dict, List

import nbformat
import pytest
from nbclient import NotebookClient

CELLS = [
    # 0: a lab on the emulator (GPULAB_TEST_KUBECONFIG), and 6 MiB to copy.
    "import os, pathlib, gpulab\n"
    "lab = gpulab.Lab(name='nb', kubeconfig=os.environ['GPULAB_TEST_KUBECONFIG'])\n"
    "pathlib.Path('data.bin').write_bytes(os.urandom(6 << 20))",
    # 1: the default progress inside Jupyter.
    "report = lab.up()",
    # 2: progress=True: the same display, with a bar for the bytes (through the API server: no sshd here).
    "pod_dir = lab.exec('pwd').stdout.strip()\n"
    "stats = lab.copy_to('data.bin', pod_dir + '/data.bin', progress=True, via='kube')",
    # 3: progress=False: no display at all.
    "down = lab.down(progress=False)",
    "print(stats['bytes'], len(down['leftovers']))",
]


class RecordingClient(NotebookClient):
    """Keeps every message the kernel publishes, by cell, besides building the outputs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: Dict[int, List[Dict[str, Any]]] = {}

    def process_message(self, msg: Dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.messages.setdefault(cell_index, []).append(msg)
        return super().process_message(msg, cell, cell_index)


def displays(cell: Any) -> List[Any]:
    return [out for out in cell.outputs if out.output_type == "display_data"]


def test_a_notebook_shows_ticks_timings_and_a_copy_bar_updated_in_place(sandbox, user, monkeypatch):
    monkeypatch.setenv("GPULAB_TEST_KUBECONFIG", str(sandbox.kubeconfig))
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    client = RecordingClient(notebook, timeout=180, kernel_name="python3",
                             resources={"metadata": {"path": str(user / "work")}})
    client.execute()

    up, copy, down, last = notebook.cells[1], notebook.cells[2], notebook.cells[3], notebook.cells[4]
    # The kernel may send one print in several stream messages.
    assert "".join(out.text for out in last.outputs if out.output_type == "stream") == f"{6 << 20} 0\n"

    # up: one display, updated in place to its final state: every step ticked, with its time.
    [shown] = displays(up)
    html, text = shown.data["text/html"], shown.data["text/plain"]
    assert "gpulab-progress" in html
    for step in ["preflight", "wait for the workspace"]:
        assert f"✓</span> {step}" in html, html
        assert f"✓ {step} — " in text, text
    assert "…" not in text and "✗" not in text, text
    published = [m for m in client.messages[1] if m["msg_type"] in ("display_data", "update_display_data")]
    assert [m["msg_type"] for m in published[:1]] == ["display_data"], published
    assert len(published) > 1, "the display was never updated in place"
    assert {m["content"]["transient"]["display_id"] for m in published} == {
        published[0]["content"]["transient"]["display_id"]}

    # the copy: while it ran, a bar with the bytes, rate and ETA; at the end, a tick and the total.
    [shown] = displays(copy)
    assert "✓</span> upload data.bin" in shown.data["text/html"]
    assert re.search(r"✓ upload data\.bin — 6\.0 MiB, [\d.]+ [KMG]iB/s, ", shown.data["text/plain"]), shown.data
    drawn = [m["content"]["data"] for m in client.messages[2]
             if m["msg_type"] in ("display_data", "update_display_data")]
    running = [data for data in drawn if "<progress" in data["text/html"]]
    assert running, drawn
    bar = r"… upload data\.bin \[[#.]{24}\] \d+% — [\d.]+ MiB of 6\.0 MiB, [\d.]+ [KMG]iB/s, ETA "
    assert re.search(bar, running[0]["text/plain"]), running[0]
    assert re.search(r"<progress value=\"\d+\" max=\"\d+\"", running[0]["text/html"]), running[0]
    assert re.search(r"MiB of 6\.0 MiB · [\d.]+ [KMG]iB/s · ETA ", running[0]["text/html"]), running[0]

    # progress=False: nothing displayed.
    assert displays(down) == []


def test_progress_takes_none_true_false_or_a_callable(sandbox, user, capsys):
    import gpulab

    lab = gpulab.Lab(name="flags", kubeconfig=sandbox.kubeconfig)
    # Outside Jupyter: True prints a line per finished step.
    lab.up(progress=True)
    out = capsys.readouterr().out
    assert "✓ preflight " in out and "✓ wait for the workspace " in out, out
    # False and None (the default, outside Jupyter) print nothing.
    lab.up(progress=False)
    lab.up()
    assert capsys.readouterr().out == ""
    # A callable gets every event as a dict; one with finish() hears how the call ended.
    local = user / "small.txt"
    local.write_text("x" * 10)
    pod_dir = lab.exec("pwd").stdout.strip()

    class Collect:
        def __init__(self) -> None:
            self.events: List[Dict[str, Any]] = []
            self.finished: List[bool] = []

        def __call__(self, event: Dict[str, Any]) -> None:
            self.events.append(event)

        def finish(self, ok: bool) -> None:
            self.finished.append(ok)

    collect = Collect()
    lab.copy_to(local, f"{pod_dir}/small.txt", progress=collect, via="kube")
    assert collect.finished == [True]
    last = collect.events[-1]
    assert (last["event"], last["unit"], last["done"]) == ("progress", "bytes", last["total"]), collect.events
    failed = Collect()
    with pytest.raises(gpulab.GpulabError):
        lab.copy_to(user / "missing.txt", f"{pod_dir}/missing.txt", progress=failed, via="kube")
    assert failed.finished == [False]
    # Anything else is refused before any work.
    with pytest.raises(TypeError, match="progress must be None, True, False or a callable"):
        lab.up(progress="yes")  # type: ignore[arg-type]
    lab.down(progress=False)
