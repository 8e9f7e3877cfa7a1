"""Type stubs of the compiled core module; `gpulab` re-exports everything here."""

from os import PathLike
from typing import Any, Dict, List, Optional, Union

__version__: str

class GpulabError(Exception):
    """Base class of every gpulab error."""

class SpecError(GpulabError):
    """The lab's settings are invalid; `errors` lists each problem."""

    errors: List[Dict[str, Any]]

class CredentialsError(GpulabError):
    """No usable cloud credentials."""

class ProvisionError(GpulabError):
    """A cloud provisioning step failed."""

class ClusterError(GpulabError):
    """The Kubernetes API refused or failed a request."""

class WorkspaceError(GpulabError):
    """The workspace pod could not be created or never became ready."""

class RemoteError(GpulabError):
    """A command, copy or port forward in the workspace failed."""

class TimeoutError(GpulabError):
    """A wait ran out of time."""

class StateError(GpulabError):
    """The lab's local state is unreadable or locked."""

def plan(config: Optional[Union[str, PathLike[str]]] = None, **kwargs: Any) -> Dict[str, Any]:
    """What `up` would create and what it would cost; needs no AWS account."""

def catalog(
    gpu: Optional[str] = None,
    min_gpu_memory_gib: Optional[int] = None,
    max_price_per_hour: Optional[float] = None,
    region: str = "us-west-2",
) -> List[Dict[str, Any]]:
    """GPU instance types with their GPUs and on-demand price in `region`, filtered."""
