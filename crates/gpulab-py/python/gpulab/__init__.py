"""gpulab: GPU development labs on AWS EKS or any Kubernetes cluster, from Python.

    >>> import gpulab
    >>> plan = gpulab.plan(node_type="g5.xlarge")
    >>> round(plan["cost"]["per_hour"], 2)

Everything here wraps the Rust core that the `gpulab` command uses, so settings, validation, errors and
costs are the same in both.
"""

from gpulab._gpulab import (
    ClusterError,
    CredentialsError,
    GpulabError,
    ProvisionError,
    RemoteError,
    SpecError,
    StateError,
    TimeoutError,
    WorkspaceError,
    __version__,
    catalog,
    plan,
)

__all__ = [
    "ClusterError",
    "CredentialsError",
    "GpulabError",
    "ProvisionError",
    "RemoteError",
    "SpecError",
    "StateError",
    "TimeoutError",
    "WorkspaceError",
    "__version__",
    "catalog",
    "plan",
]
