# gpulab GPU check: nvidia-smi. Shipped into the workspace by gpulab (or run on this machine by
# `gpulab test --local`) from standard input; prints one line "GPULAB_JSON <document>" with nvidia-smi's
# raw answers, which gpulab parses: the GPU list, the summary table, each GPU's clocks, power, temperature,
# throttle reasons, MIG and compute mode before the benchmarks, and the processes using the GPUs.
import json
import os
import shutil
import subprocess

QUERY = "index,name,uuid,pci.bus_id,memory.total,driver_version"
# The throttle reasons field was renamed clocks_event_reasons in newer drivers; the old name is tried
# first, then the new one, then the state without it.
STATE = ("index,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.draw,power.limit,temperature.gpu,"
         "utilization.gpu,memory.used,mig.mode.current,compute_mode")
REASONS = ("clocks_throttle_reasons.active", "clocks_event_reasons.active")
APPS = "gpu_uuid,pid,process_name,used_memory"
out = {"tool": "nvidia-smi", "available": False}


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


exe = shutil.which("nvidia-smi")
if exe is None:
    if os.environ.get("GPULAB_PLACE") == "local":
        why = "no NVIDIA driver on this machine, or its utilities are not on PATH"
    else:
        why = ("the container has no NVIDIA driver utilities "
               "(no GPU requested, the device plugin not running, or not a GPU node)")
    out["error"] = "nvidia-smi not found on PATH: " + why
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
            for fields in [STATE + "," + r for r in REASONS] + [STATE]:
                state = run([exe, "--query-gpu=" + fields, "--format=csv,noheader,nounits"])
                if state.returncode == 0:
                    out["state_fields"] = fields
                    out["state"] = state.stdout
                    break
            apps = run([exe, "--query-compute-apps=" + APPS, "--format=csv,noheader,nounits"])
            if apps.returncode == 0:
                out["apps"] = apps.stdout
    except Exception as e:  # a hung or crashing driver
        out["error"] = "nvidia-smi failed: %s: %s" % (type(e).__name__, e)

print("GPULAB_JSON " + json.dumps(out), flush=True)
