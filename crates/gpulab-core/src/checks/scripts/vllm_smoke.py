# gpulab GPU check: vLLM smoke test. Shipped into the workspace by gpulab and run from standard input:
# fetch a small model (default facebook/opt-125m), load it, generate, and print one line
# "GPULAB_JSON <document>" with the output tokens per second. A model that cannot be downloaded (no network,
# no cached copy) is its own outcome, "model_unavailable", not a failure of the GPU.
import json
import os
import sys
import time

model = os.environ.get("GPULAB_VLLM_MODEL", "facebook/opt-125m")
out = {"tool": "vllm", "available": False, "model": model}


def emit():
    print("GPULAB_JSON " + json.dumps(out), flush=True)
    sys.exit(0)


try:
    import vllm
    from vllm import LLM, SamplingParams
except Exception as e:
    out["outcome"] = "error"
    out["error"] = "vLLM is not importable: %s: %s" % (type(e).__name__, e)
    emit()
out["available"] = True
out["vllm_version"] = getattr(vllm, "__version__", None)

path = model
if not os.path.isdir(model):
    try:
        from huggingface_hub import snapshot_download

        # Falls back to the local cache when the Hub cannot be reached.
        path = snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"])
    except Exception as e:
        out["outcome"] = "model_unavailable"
        out["error"] = "could not download %s (no network access to the Hugging Face Hub, and no cached copy?): %s: %s" % (
            model, type(e).__name__, str(e)[:500])
        emit()

try:
    kwargs = dict(model=path, gpu_memory_utilization=float(os.environ.get("GPULAB_VLLM_MEMORY", "0.5")),
                  max_model_len=512, enforce_eager=True)
    if os.environ.get("GPULAB_VLLM_DTYPE"):
        kwargs["dtype"] = os.environ["GPULAB_VLLM_DTYPE"]
    llm = LLM(**kwargs)
    prompts = ["The capital of France is", "A GPU is", "Kubernetes schedules", "The best way to learn is"] * 4
    # Greedy: the same tokens on every run and every GPU generation, so a smoke result is comparable.
    params = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True)
    llm.generate(prompts[:1], SamplingParams(max_tokens=8))
    start = time.perf_counter()
    outputs = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    out.update(outcome="ok", prompts=len(prompts), output_tokens=tokens, elapsed_s=elapsed,
               tokens_per_s=tokens / elapsed if elapsed > 0 else None, sample=outputs[0].outputs[0].text[:200])
except Exception as e:
    out["outcome"] = "error"
    out["error"] = "%s: %s" % (type(e).__name__, str(e)[-1500:])
emit()
