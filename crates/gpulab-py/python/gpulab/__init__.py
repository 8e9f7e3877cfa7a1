"""gpulab: GPU development labs on AWS EKS or any Kubernetes cluster, from Python.

    >>> import gpulab
    >>> plan = gpulab.plan(node_type="g5.xlarge")
    >>> round(plan["cost"]["per_hour"], 2)

    >>> lab = gpulab.Lab(name="dev")            # or gpulab.Lab(context="my-k3s") for an existing cluster
    >>> lab.up()                                # progress shows in Jupyter; Ctrl-C / stop interrupts
    >>> print(lab.exec("nvidia-smi").stdout)
    >>> lab.down()

    >>> gpulab.test_local().rows                # the same GPU checks on this machine, no lab needed

Everything here wraps the Rust core that the `gpulab` command uses, so settings, validation, errors and
costs are the same in both. Long calls release the GIL and run on one shared background runtime, so
they work inside Jupyter's running event loop; `await lab.up_async()` and the other `*_async` methods
run them in a worker thread.
"""

from gpulab._gpulab import (
    ClusterError,
    CredentialsError,
    ExecResult,
    Forward,
    GpuReport,
    GpulabError,
    Lab,
    OwnershipError,
    ProvisionError,
    RemoteError,
    SpecError,
    StateError,
    TimeoutError,
    WorkspaceError,
    __version__,
    catalog,
    labs,
    plan,
    test_local,
)
from gpulab._progress import NotebookProgress, print_progress

__all__ = [
    "ClusterError",
    "CredentialsError",
    "ExecResult",
    "Forward",
    "GpuReport",
    "GpulabError",
    "Lab",
    "NotebookProgress",
    "OwnershipError",
    "ProvisionError",
    "RemoteError",
    "SpecError",
    "StateError",
    "TimeoutError",
    "WorkspaceError",
    "__version__",
    "catalog",
    "labs",
    "plan",
    "print_progress",
    "test_local",
]
