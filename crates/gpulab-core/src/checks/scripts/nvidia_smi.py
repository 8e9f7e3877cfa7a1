# gpulab GPU check: nvidia-smi. Shipped into the workspace by gpulab and run from standard input; prints
# one line "GPULAB_JSON <document>" with nvidia-smi's raw answers, which gpulab parses.
import json
import shutil
import subprocess

QUERY = "index,name,uuid,pci.bus_id,memory.total,driver_version"
out = {"tool": "nvidia-smi", "available": False}


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


exe = shutil.which("nvidia-smi")
if exe is None:
    out["error"] = (
        "nvidia-smi not found on PATH: the container has no NVIDIA driver utilities "
        "(no GPU requested, the device plugin not running, or not a GPU node)"
    )
else:
    try:
        query = run([exe, "--query-gpu=" + QUERY, "--format=csv,noheader,nounits"])
        if query.returncode != 0:
            out["error"] = "nvidia-smi failed (exit %d): %s" % (
                query.returncode,
                (query.stderr or query.stdout).strip()[-2000:],
            )
        else:
            summary = run([exe])
            out["available"] = True
            out["query"] = query.stdout
            out["summary"] = summary.stdout
    except Exception as e:  # a hung or crashing driver
        out["error"] = "nvidia-smi failed: %s: %s" % (type(e).__name__, e)

print("GPULAB_JSON " + json.dumps(out), flush=True)
