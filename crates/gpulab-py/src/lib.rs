//! Python bindings: `import gpulab`. Only wraps gpulab-core: each function converts its arguments, calls
//! the core, and converts the result (through JSON, so Python sees plain dicts and lists) or the error
//! (each core error kind its own exception class under `gpulab.GpulabError`).
//!
//! Network calls run on one shared Tokio runtime with the GIL released, and can be interrupted with
//! Ctrl-C (see [`runtime`]).

mod convert;
mod lab;
mod runtime;

use gpulab_core::catalog::CatalogFilter;
use gpulab_core::plan::Plan;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use convert::{resolve, to_python};

pyo3::create_exception!(
    gpulab,
    GpulabError,
    PyException,
    "Base class of every gpulab error."
);
pyo3::create_exception!(
    gpulab,
    SpecError,
    GpulabError,
    "The lab's settings are invalid; `.errors` lists each problem."
);
pyo3::create_exception!(
    gpulab,
    CredentialsError,
    GpulabError,
    "No usable cloud credentials."
);
pyo3::create_exception!(
    gpulab,
    ProvisionError,
    GpulabError,
    "A cloud provisioning step failed."
);
pyo3::create_exception!(
    gpulab,
    ClusterError,
    GpulabError,
    "The Kubernetes API refused or failed a request."
);
pyo3::create_exception!(
    gpulab,
    WorkspaceError,
    GpulabError,
    "The workspace pod could not be created or never became ready."
);
pyo3::create_exception!(
    gpulab,
    RemoteError,
    GpulabError,
    "A command, copy or port forward in the workspace failed."
);
pyo3::create_exception!(
    gpulab,
    OwnershipError,
    GpulabError,
    "Something with the lab's name is not the lab's (it lacks the lab's ID): gpulab leaves it alone."
);
pyo3::create_exception!(gpulab, TimeoutError, GpulabError, "A wait ran out of time.");
pyo3::create_exception!(
    gpulab,
    StateError,
    GpulabError,
    "The lab's local state is unreadable or locked."
);

/// What `up` would create and what it would cost, as a dict; needs no AWS account.
///
/// Settings come from defaults, gpulab.toml, the environment, then these keyword arguments.
#[pyfunction]
#[pyo3(signature = (config=None, **kwargs))]
fn plan<'py>(
    py: Python<'py>,
    config: Option<std::path::PathBuf>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let spec = resolve(py, config, kwargs)?;
    to_python(py, &Plan::new(&spec))
}

/// GPU instance types with their GPUs and on-demand price in `region`, filtered.
#[pyfunction]
#[pyo3(signature = (gpu=None, min_gpu_memory_gib=None, max_price_per_hour=None, region="us-west-2"))]
fn catalog<'py>(
    py: Python<'py>,
    gpu: Option<String>,
    min_gpu_memory_gib: Option<u32>,
    max_price_per_hour: Option<f64>,
    region: &str,
) -> PyResult<Bound<'py, PyList>> {
    let filter = CatalogFilter {
        gpu,
        min_gpu_memory_gib,
        max_price_per_hour,
        region: region.into(),
    };
    Ok(to_python(py, &filter.apply())?.cast_into::<PyList>()?)
}

/// The `gpulab` Python module.
#[pymodule]
fn _gpulab(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(plan, m)?)?;
    m.add_function(wrap_pyfunction!(catalog, m)?)?;
    m.add_function(wrap_pyfunction!(lab::labs, m)?)?;
    m.add_function(wrap_pyfunction!(lab::test_local, m)?)?;
    m.add_class::<lab::PyLab>()?;
    m.add_class::<lab::ExecResult>()?;
    m.add_class::<lab::Forward>()?;
    m.add_class::<lab::GpuReport>()?;
    m.add("GpulabError", py.get_type::<GpulabError>())?;
    m.add("SpecError", py.get_type::<SpecError>())?;
    m.add("CredentialsError", py.get_type::<CredentialsError>())?;
    m.add("ProvisionError", py.get_type::<ProvisionError>())?;
    m.add("ClusterError", py.get_type::<ClusterError>())?;
    m.add("WorkspaceError", py.get_type::<WorkspaceError>())?;
    m.add("RemoteError", py.get_type::<RemoteError>())?;
    m.add("OwnershipError", py.get_type::<OwnershipError>())?;
    m.add("TimeoutError", py.get_type::<TimeoutError>())?;
    m.add("StateError", py.get_type::<StateError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
