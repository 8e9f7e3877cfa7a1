# gpulab vLLM throughput benchmark: N completion requests, C at a time, against the OpenAI-compatible
# endpoint of a running `vllm serve`. Standard library only. Prints one line "GPULAB_JSON <document>".
import json
import os
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

base = os.environ.get("GPULAB_BENCH_URL", "http://127.0.0.1:8000").rstrip("/")
requests = int(os.environ.get("GPULAB_BENCH_REQUESTS", "64"))
concurrency = int(os.environ.get("GPULAB_BENCH_CONCURRENCY", "16"))
max_tokens = int(os.environ.get("GPULAB_BENCH_MAX_TOKENS", "128"))
prompt = os.environ.get("GPULAB_BENCH_PROMPT", "Explain how a GPU executes a matrix multiplication, step by step.")
model = os.environ.get("GPULAB_BENCH_MODEL") or None
out = {"url": base, "requests": requests, "concurrency": concurrency, "max_tokens": max_tokens}


def emit():
    print("GPULAB_JSON " + json.dumps(out), flush=True)
    sys.exit(0)


def call(path, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


try:
    if model is None:
        model = call("/v1/models", timeout=30)["data"][0]["id"]
except Exception as e:
    out["error"] = "the server at %s does not answer /v1/models: %s: %s" % (base, type(e).__name__, e)
    emit()
out["model"] = model


def one(_):
    start = time.perf_counter()
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}
    try:
        usage = call("/v1/completions", body).get("usage") or {}
        return (time.perf_counter() - start, usage.get("completion_tokens", 0), usage.get("prompt_tokens", 0), None)
    except Exception as e:
        return (time.perf_counter() - start, 0, 0, "%s: %s" % (type(e).__name__, e))


start = time.perf_counter()
with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
    results = list(pool.map(one, range(requests)))
elapsed = time.perf_counter() - start
ok = [r for r in results if r[3] is None]
latencies = sorted(r[0] for r in ok)
out.update(
    completed=len(ok),
    failed=len(results) - len(ok),
    errors=sorted({r[3] for r in results if r[3]})[:5],
    output_tokens=sum(r[1] for r in ok),
    prompt_tokens=sum(r[2] for r in ok),
    elapsed_s=elapsed,
    output_tokens_per_s=sum(r[1] for r in ok) / elapsed if elapsed > 0 else 0.0,
    requests_per_s=len(ok) / elapsed if elapsed > 0 else 0.0,
    latency_p50_s=statistics.median(latencies) if latencies else None,
    latency_p90_s=latencies[int(0.9 * (len(latencies) - 1))] if latencies else None,
)
emit()
