"""A fake of the parts of PyTorch gpulab's check scripts use (see ../README.md)."""
import os
import time

__version__ = "0.0.0+fake"


class _Version:
    cuda = "12.4"


version = _Version()


class dtype:
    def __init__(self, name, itemsize):
        self.name, self.itemsize = name, itemsize


float16 = dtype("float16", 2)
bfloat16 = dtype("bfloat16", 2)
float32 = dtype("float32", 4)


class device:
    def __init__(self, kind, index=0):
        self.type, self.index = kind, index


class Tensor:
    def __init__(self, numel, dtype, value=0.0):
        self.numel, self.dtype, self.value = numel, dtype, value

    def fill_(self, v):
        self.value = v
        return self

    def copy_(self, other):
        self.value = other.value
        return self

    def element_size(self):
        return self.dtype.itemsize

    def __eq__(self, other):
        return _Bool(self.value == other)

    def item(self):
        return self.value


class _Bool:
    def __init__(self, v):
        self.v = v

    def item(self):
        return self.v


def all(b):
    return b


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def randn(*shape, device=None, dtype=float32):
    return Tensor(_numel(shape), dtype)


def empty(*shape, device=None, dtype=float32):
    return Tensor(_numel(shape), dtype)


def tensor(data, dtype=float32):
    return Tensor(len(data), dtype)


def empty_like(t):
    return Tensor(t.numel, t.dtype)


def mm(a, b, out=None):
    return out if out is not None else Tensor(a.numel, a.dtype)


class _Flag:
    allow_tf32 = True


class _Backends:
    class cuda:
        matmul = _Flag()

    cudnn = _Flag()


backends = _Backends()


class _Props:
    def __init__(self, i):
        self.name = "Fake GPU %d" % i
        # As the fake nvidia-smi (bin/) names GPU i, without its "GPU-" prefix, as PyTorch prints it.
        self.uuid = "fa4e0000-0000-0000-0000-%012d" % i
        self.total_memory = 16 << 30
        self.major, self.minor = 8, 0
        self.multi_processor_count = 1


class _Event:
    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return max((end.t - self.t) * 1e3, 0.001)


class _Nccl:
    @staticmethod
    def version():
        return (2, 21, 5)


class _Cuda:
    Event = _Event
    nccl = _Nccl()

    @staticmethod
    def is_available():
        return int(os.environ.get("FAKE_GPUS", "1")) > 0

    @staticmethod
    def device_count():
        return int(os.environ.get("FAKE_GPUS", "1"))

    @staticmethod
    def get_device_properties(i):
        return _Props(i)

    @staticmethod
    def set_device(d):
        pass

    @staticmethod
    def mem_get_info(d=None):
        return (15 << 30, 16 << 30)

    @staticmethod
    def synchronize():
        pass

    @staticmethod
    def empty_cache():
        pass


cuda = _Cuda()
