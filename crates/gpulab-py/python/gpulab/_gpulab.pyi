"""Type stubs of the compiled core module; `gpulab` re-exports everything here."""

from os import PathLike
from typing import Any, Callable, Coroutine, Dict, List, Mapping, Optional, Sequence, Tuple, Union, final


_Path = Union[str, PathLike[str]]
_Progress = Optional[Union[Callable[[Dict[str, Any]], object], bool]]

__version__: str

__all__ = [
    "plan",
    "catalog",
    "labs",
    "test_local",
    "Lab",
    "ExecResult",
    "Forward",
    "GpuReport",
    "GpulabError",
    "SpecError",
    "CredentialsError",
    "ProvisionError",
    "ClusterError",
    "WorkspaceError",
    "RemoteError",
    "TimeoutError",
    "OwnershipError",
    "StateError",
    "__version__",
]

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

class OwnershipError(GpulabError):
    """Something with the lab's name is not the lab's (it lacks the lab's ID): gpulab leaves it alone."""

class TimeoutError(GpulabError):
    """A wait ran out of time."""

class StateError(GpulabError):
    """The lab's local state is unreadable or locked."""

def plan(config: Optional[_Path] = None, **kwargs: Any) -> Dict[str, Any]:
    """What `up` would create and what it would cost; needs no AWS account."""

def catalog(
    gpu: Optional[str] = None,
    min_gpu_memory_gib: Optional[int] = None,
    max_price_per_hour: Optional[float] = None,
    region: str = "us-west-2",
) -> List[Dict[str, Any]]:
    """GPU instance types with their GPUs and on-demand price in `region`, filtered."""

def labs() -> List[Dict[str, Any]]:
    """Every lab on this machine, as `gpulab ls` lists them."""

def test_local(
    python: Optional[_Path] = None,
    vllm_model: Optional[str] = "facebook/opt-125m",
    nccl: bool = True,
    repeats: int = 10,
    expected_gpus: Optional[int] = None,
) -> GpuReport:
    """Run the GPU validation suite on this machine, with no lab (`gpulab test --local`)."""

@final
class ExecResult:
    """How a command in the workspace ended, and what it printed."""

    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...
    @property
    def exit_code(self) -> int: ...
    @property
    def signal(self) -> Optional[str]: ...
    @property
    def ok(self) -> bool: ...

@final
class Forward:
    """A local port forwarded to a port in the workspace; a context manager."""

    @property
    def local_port(self) -> int: ...
    @property
    def remote_port(self) -> int: ...
    @property
    def address(self) -> str: ...
    @property
    def connections(self) -> int: ...
    @property
    def open(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> Forward: ...
    def __exit__(self, *_exc: object) -> bool: ...

@final
class GpuReport:
    """What `test_gpu` or `test_local` found: the tools' answers and a verdict per check."""

    @property
    def passed(self) -> bool: ...
    @property
    def rows(self) -> List[Tuple[str, str, str]]: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class Lab:
    """One lab: up, exec, copy, forward, test, down."""

    def __new__(
        cls,
        config: Optional[_Path] = None,
        context: Optional[str] = None,
        kubeconfig: Optional[_Path] = None,
        **kwargs: Any,
    ) -> Lab: ...
    @staticmethod
    def load(name: str) -> Lab: ...
    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> Dict[str, Any]: ...
    def plan(self) -> Dict[str, Any]: ...
    def up(self, progress: _Progress = None) -> Dict[str, Any]: ...
    def status(self) -> Dict[str, Any]: ...
    def cost(self) -> Dict[str, Any]: ...
    def stop(self, progress: _Progress = None) -> None: ...
    def start(self, progress: _Progress = None) -> None: ...
    def autostop(
        self, idle: Optional[str] = None, budget: Optional[Union[float, str]] = None
    ) -> Dict[str, Any]: ...
    def down(self, progress: _Progress = None) -> Dict[str, Any]: ...
    def exec(
        self,
        cmd: Union[str, Sequence[str]],
        stdin: Optional[Union[str, bytes]] = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> ExecResult: ...
    def copy_to(
        self,
        local: Union[_Path, Sequence[_Path]],
        remote: str,
        progress: _Progress = None,
        via: str = "auto",
        links: str = "follow",
    ) -> Dict[str, Any]: ...
    def copy_from(
        self,
        remote: Union[_Path, Sequence[_Path]],
        local: _Path,
        progress: _Progress = None,
        via: str = "auto",
        links: str = "follow",
    ) -> Dict[str, Any]: ...
    def sync(
        self,
        source: str,
        target: str,
        delete: bool = False,
        dry_run: bool = False,
        checksum: bool = False,
        exclude: Sequence[str] = ...,
        gitignore: bool = True,
        links: str = "follow",
        progress: _Progress = None,
    ) -> Dict[str, Any]: ...
    def forward(self, port: int, local_port: Optional[int] = None) -> Forward: ...
    def jupyter_url(self, local_port: Optional[int] = None) -> str: ...
    def close(self) -> None: ...
    def test_gpu(
        self,
        vllm_model: Optional[str] = "facebook/opt-125m",
        nccl: bool = True,
        repeats: int = 10,
        expected_gpus: Optional[int] = None,
        python: Optional[str] = None,
    ) -> GpuReport: ...
    def slurm_setup(self, install_missing: bool = True) -> Dict[str, Any]: ...
    def vllm_serve(self, model: str, port: int = 8000, wait: bool = True, timeout: float = 900.0) -> Dict[str, Any]: ...
    def vllm_stop(self) -> bool: ...
    def vllm_bench(
        self,
        port: int = 8000,
        requests: int = 64,
        concurrency: int = 16,
        max_tokens: int = 128,
        prompt: Optional[str] = None,
    ) -> Dict[str, Any]: ...
    def up_async(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Dict[str, Any]]: ...
    def down_async(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Dict[str, Any]]: ...
    def status_async(self) -> Coroutine[Any, Any, Dict[str, Any]]: ...
    def exec_async(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, ExecResult]: ...
    def copy_to_async(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Dict[str, Any]]: ...
    def copy_from_async(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Dict[str, Any]]: ...
    def test_gpu_async(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, GpuReport]: ...
    def vllm_serve_async(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Dict[str, Any]]: ...
