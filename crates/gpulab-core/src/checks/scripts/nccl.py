# gpulab GPU check: NCCL all-reduce across every GPU. Shipped into the workspace by gpulab and run from
# standard input; it writes its worker to a temporary file and starts one process per GPU (torch.distributed,
# NCCL backend), then prints one line "GPULAB_JSON <document>" with rank 0's measurement.
import json
import os
import socket
import subprocess
import sys
import tempfile

WORKER = r'''
import json, os, statistics, sys
import torch
import torch.distributed as dist
rank = int(os.environ["RANK"]); world = int(os.environ["WORLD_SIZE"])
torch.cuda.set_device(rank)
dist.init_process_group("nccl", rank=rank, world_size=world)
nbytes = int(os.environ.get("GPULAB_NCCL_BYTES", str(256 << 20)))
x = torch.empty(nbytes // 4, device="cuda", dtype=torch.float32)
def step():
    x.fill_(rank + 1)
    dist.all_reduce(x)
for _ in range(5):
    step()
torch.cuda.synchronize()
expected = world * (world + 1) / 2
correct = bool(torch.all(x == expected).item())
samples = []
for _ in range(int(os.environ.get("GPULAB_REPEATS", "10"))):
    s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
    s.record(); dist.all_reduce(x); e.record(); e.synchronize()
    samples.append(s.elapsed_time(e))
ms = statistics.median(samples)
algbw = nbytes / (ms / 1e3) / 1e9
v = torch.cuda.nccl.version()  # a tuple in current PyTorch, one int (e.g. 2708) in old releases
nccl_version = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
if rank == 0:
    print("GPULAB_JSON " + json.dumps({
        "world_size": world, "bytes": nbytes, "median_ms": ms, "correct": correct,
        "algbw_gbs": algbw, "busbw_gbs": algbw * 2 * (world - 1) / world,
        "nccl_version": nccl_version,
    }), flush=True)
dist.destroy_process_group()
'''

out = {"tool": "nccl", "available": False}


def emit():
    print("GPULAB_JSON " + json.dumps(out), flush=True)
    sys.exit(0)


try:
    import torch
    import torch.distributed as dist
except Exception as e:
    out["error"] = "PyTorch is not importable: %s: %s" % (type(e).__name__, e)
    emit()
if not torch.cuda.is_available() or not dist.is_nccl_available():
    out["error"] = "NCCL is not available (CUDA visible: %s)" % torch.cuda.is_available()
    emit()
world = torch.cuda.device_count()
out["available"] = True
out["world_size"] = world
if world < 2:
    out["error"] = "only %d GPU visible; all-reduce needs two or more" % world
    emit()

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
with tempfile.NamedTemporaryFile("w", suffix="_gpulab_nccl.py", delete=False) as f:
    f.write(WORKER)
    path = f.name
try:
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, path], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    timeout = float(os.environ.get("GPULAB_NCCL_TIMEOUT", "300"))
    results = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out["error"] = "all-reduce did not finish within %ds" % timeout
            emit()
        results.append((p.returncode, stdout, stderr))
    failed = [(i, r) for i, r in enumerate(results) if r[0] != 0]
    if failed:
        rank, (code, _, stderr) = failed[0]
        out["error"] = "rank %d exited with %d: %s" % (rank, code, stderr.strip()[-1500:])
        emit()
    lines = [l for l in results[0][1].splitlines() if l.startswith("GPULAB_JSON ")]
    if not lines:
        out["error"] = "rank 0 printed no result"
        emit()
    out.update(json.loads(lines[-1][len("GPULAB_JSON "):]))
finally:
    os.unlink(path)
emit()
