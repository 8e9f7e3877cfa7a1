# gpulab GPU check: PyTorch. Shipped into the workspace by gpulab (or run on this machine by
# `gpulab test --local`) from standard input; prints one line "GPULAB_JSON <document>": whether PyTorch
# sees CUDA, each device, and per device a matmul benchmark (fp16, bf16 where the GPU has it, fp32 without
# TF32) and a device-to-device copy bandwidth test, each timed with CUDA events after a warm-up, the median
# of the repeats. While each benchmark runs, nvidia-smi (where there is one) samples the GPU's clocks,
# power and throttle reasons every 100 ms; their summary goes beside each figure ("telemetry").
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading

out = {"tool": "torch", "available": False, "cuda_available": False, "devices": []}


def emit():
    print("GPULAB_JSON " + json.dumps(out), flush=True)
    sys.exit(0)


try:
    import torch
except Exception as e:
    out["error"] = "PyTorch is not importable: %s: %s" % (type(e).__name__, e)
    emit()

out["available"] = True
out["torch_version"] = torch.__version__
out["cuda_build"] = torch.version.cuda
try:
    out["cuda_available"] = bool(torch.cuda.is_available())
except Exception as e:
    out["error"] = "torch.cuda.is_available() raised %s: %s" % (type(e).__name__, e)
    emit()
if not out["cuda_available"]:
    if torch.version.cuda is None:
        out["error"] = "torch.cuda.is_available() is False: this PyTorch build has no CUDA"
    else:
        out["error"] = "torch.cuda.is_available() is False: no CUDA device or driver visible"
    emit()

REPEATS = max(3, int(os.environ.get("GPULAB_REPEATS", "10")))
WARMUP = 3
# Each timed sample lasts at least this long, so that launch overhead does not count and the whole timed
# run (REPEATS samples, 1 s by default) is long enough for nvidia-smi to sample it several times.
SAMPLE_MS = 100.0
# One matmul of the chosen size should take at most this long (keeps slow GPUs' runs short).
MAX_MATMUL_S = 0.2
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


SMI = shutil.which("nvidia-smi")
TELEMETRY = "clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu,utilization.gpu"
# The throttle reasons field was renamed clocks_event_reasons in newer drivers: the old name first.
REASONS = ("clocks_throttle_reasons.active", "clocks_event_reasons.active")
# Throttle reason bits (NVML's nvmlClocksEventReasons): 0x1 is "the GPU is idle", which says nothing about
# a benchmark and is left out of the union.
IDLE = 0x1


def number(text):
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


class Sampler:
    """nvidia-smi's view of one GPU, sampled every 100 ms in a thread while a benchmark runs (and once
    just after it, if it ended before the first sample came back)."""

    def __init__(self, target):
        self.target = target
        self.reasons = list(REASONS)
        self.rows = []
        self.error = None
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def sample(self):
        """One reading: rows of fields, or None (and self.error) when nvidia-smi cannot give one."""
        while True:
            argv = [SMI, "--query-gpu=%s,%s" % (TELEMETRY, self.reasons[0]),
                    "--format=csv,noheader,nounits", "-i", self.target]
            try:
                run = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            except Exception as e:
                self.error = "%s: %s" % (type(e).__name__, e)
                return None
            if run.returncode == 0:
                return [[f.strip() for f in line.split(",")] for line in run.stdout.splitlines() if line.strip()]
            if len(self.reasons) > 1:
                self.reasons.pop(0)
                continue
            self.error = (run.stderr or run.stdout).strip()[-300:]
            return None

    def loop(self):
        while not self.stop_event.is_set():
            rows = self.sample()
            if rows is None:
                return
            if not self.stop_event.is_set():
                self.rows.extend(rows)
            self.stop_event.wait(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(15)
        if not self.rows and self.error is None:
            self.rows.extend(self.sample() or [])

    def summary(self):
        rows = [r for r in self.rows if len(r) == 8]
        if not rows:
            return {"samples": 0, "error": self.error or "no sample taken while the benchmark ran"}
        # Samples taken while the GPU ran kernels (utilization is over nvidia-smi's own sample period):
        # the moments between allocations and launches would otherwise pull the clock median down.
        busy = [r for r in rows if number(r[6]) is None or number(r[6]) >= 50]
        rows = busy or rows

        def column(i):
            return [v for v in (number(r[i]) for r in rows) if v is not None]

        def median(i):
            values = column(i)
            return statistics.median(values) if values else None

        reasons = 0
        for r in rows:
            try:
                reasons |= int(r[7], 16)
            except ValueError:
                pass
        temps = column(5)
        return {
            "samples": len(rows),
            "sm_clock_mhz": median(0),
            "max_sm_clock_mhz": median(1),
            "mem_clock_mhz": median(2),
            "power_w": median(3),
            "power_limit_w": median(4),
            "temperature_c": max(temps) if temps else None,
            "utilization_pct": median(6),
            "throttle_reasons": reasons & ~IDLE,
        }


def sampled(props, index, measure):
    """Run `measure` with a Sampler on the GPU PyTorch calls `index`; its result gets "telemetry"."""
    uuid = getattr(props, "uuid", None)
    if SMI is None:
        return measure()
    # nvidia-smi numbers GPUs its own way (all of them, in PCI order); the UUID names the same GPU for both.
    target = None
    if uuid is not None:
        target = str(uuid)
        if not target.startswith(("GPU-", "MIG-")):
            target = "GPU-" + target
    elif not os.environ.get("CUDA_VISIBLE_DEVICES") and torch.cuda.device_count() == 1:
        target = str(index)
    if target is None:
        return measure()
    with Sampler(target) as sampler:
        result = measure()
    result["telemetry"] = sampler.summary()
    return result


def time_ms(fn, inner):
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(REPEATS):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / inner)
    return statistics.median(samples)


def inner_for(ms):
    return max(1, int(SAMPLE_MS / max(ms, 1e-3)) + 1)


def probe_ms(fn):
    fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def matmul(dtype_name, dtype, device, free):
    size = dtype.itemsize if hasattr(dtype, "itemsize") else torch.tensor([], dtype=dtype).element_size()
    # A 4096 probe estimates the rate; the size is the largest that fits a quarter of free memory and
    # runs in at most MAX_MATMUL_S, so big GPUs get big matrices and T4s are not kept busy for minutes.
    a = torch.randn(4096, 4096, device=device, dtype=dtype)
    b = torch.randn(4096, 4096, device=device, dtype=dtype)
    est_tflops = 2 * 4096**3 / (probe_ms(lambda: torch.mm(a, b)) / 1e3) / 1e12
    del a, b
    n = 2048
    for candidate in (16384, 8192, 4096):
        fits = 3 * candidate * candidate * size <= free / 4
        quick = 2 * candidate**3 / (est_tflops * 1e12) <= MAX_MATMUL_S
        if fits and quick:
            n = candidate
            break
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    fn = lambda: torch.mm(a, b, out=c)
    ms = time_ms(fn, inner_for(probe_ms(fn)))
    del a, b, c
    torch.cuda.empty_cache()
    return {"dtype": dtype_name, "n": n, "median_ms": ms, "tflops": 2 * n**3 / (ms / 1e3) / 1e12}


def bandwidth(device, free):
    nbytes = min(1 << 30, int(free / 4)) // 4 * 4
    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    fn = lambda: dst.copy_(src)
    ms = time_ms(fn, inner_for(probe_ms(fn)))
    del src, dst
    torch.cuda.empty_cache()
    # A copy reads and writes every byte once.
    return {"bytes": nbytes, "median_ms": ms, "gbs": 2 * nbytes / (ms / 1e3) / 1e9}


for i in range(torch.cuda.device_count()):
    props = torch.cuda.get_device_properties(i)
    dev = {
        "index": i,
        "name": props.name,
        "uuid": str(props.uuid) if getattr(props, "uuid", None) is not None else None,
        "memory_bytes": props.total_memory,
        "capability": [props.major, props.minor],
        "matmul": [],
        "bandwidth": None,
        "errors": [],
    }
    out["devices"].append(dev)
    device = torch.device("cuda", i)
    torch.cuda.set_device(device)
    dtypes = [("float16", torch.float16)]
    # bf16 needs Ampere (8.0) or newer; newer PyTorch reports it "supported" on older GPUs by emulation.
    if props.major >= 8:
        dtypes.append(("bfloat16", torch.bfloat16))
    dtypes.append(("float32", torch.float32))
    for name, dtype in dtypes:
        try:
            free, _ = torch.cuda.mem_get_info(device)
            dev["matmul"].append(sampled(props, i, lambda: matmul(name, dtype, device, free)))
        except Exception as e:
            dev["errors"].append("matmul %s: %s: %s" % (name, type(e).__name__, e))
            torch.cuda.empty_cache()
    try:
        free, _ = torch.cuda.mem_get_info(device)
        dev["bandwidth"] = sampled(props, i, lambda: bandwidth(device, free))
    except Exception as e:
        dev["errors"].append("bandwidth: %s: %s" % (type(e).__name__, e))
        torch.cuda.empty_cache()

emit()
