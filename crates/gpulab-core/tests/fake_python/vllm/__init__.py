"""A fake vLLM: an LLM whose outputs are as long as asked."""
__version__ = "0.0.0+fake"


class SamplingParams:
    def __init__(self, max_tokens=16, **kwargs):
        self.max_tokens = max_tokens


class _Completion:
    def __init__(self, n):
        self.token_ids = list(range(n))
        self.text = " fake" * n


class _Output:
    def __init__(self, n):
        self.outputs = [_Completion(n)]


class LLM:
    def __init__(self, model, **kwargs):
        self.model = model

    def generate(self, prompts, params):
        return [_Output(params.max_tokens) for _ in prompts]
