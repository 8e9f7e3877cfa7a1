"""A fake torch.distributed: no communication; all_reduce sets the sum every rank would produce."""
import os


def is_nccl_available():
    return True


def init_process_group(backend, rank=None, world_size=None, **kwargs):
    if backend != "nccl" or world_size != int(os.environ["WORLD_SIZE"]):
        raise RuntimeError("unexpected init_process_group(%r, world_size=%r)" % (backend, world_size))


def all_reduce(t):
    world = int(os.environ["WORLD_SIZE"])
    t.value = world * (world + 1) / 2


def destroy_process_group():
    pass
