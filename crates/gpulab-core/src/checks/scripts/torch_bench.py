# gpulab GPU check: PyTorch. Shipped into the workspace by gpulab and run from standard input; prints one
# line "GPULAB_JSON <document>": whether PyTorch sees CUDA, each device, and per device a matmul benchmark
# (fp16, bf16 where the GPU has it, fp32 without TF32) and a device-to-device copy bandwidth test, each timed
# with CUDA events after a warm-up, the median of the repeats.
import json
import os
import statistics
import sys

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
# Each timed sample lasts at least this long, so that launch overhead does not count.
SAMPLE_MS = 20.0
# One matmul of the chosen size should take at most this long (keeps slow GPUs' runs short).
MAX_MATMUL_S = 0.2
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


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
            dev["matmul"].append(matmul(name, dtype, device, free))
        except Exception as e:
            dev["errors"].append("matmul %s: %s: %s" % (name, type(e).__name__, e))
            torch.cuda.empty_cache()
    try:
        free, _ = torch.cuda.mem_get_info(device)
        dev["bandwidth"] = bandwidth(device, free)
    except Exception as e:
        dev["errors"].append("bandwidth: %s: %s" % (type(e).__name__, e))
        torch.cuda.empty_cache()

emit()
