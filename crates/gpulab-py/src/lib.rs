//! Python bindings: `import gpulab`. Only wraps gpulab-core: each function converts its arguments, calls
//! the core, and converts the result (through JSON, so Python sees plain dicts and lists) or the error
//! (each core error kind its own exception class under `gpulab.GpulabError`).

use gpulab_core::catalog::CatalogFilter;
use gpulab_core::plan::Plan;
use gpulab_core::spec::{SpecErrors, SpecInputs, SpecLayer};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

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
pyo3::create_exception!(gpulab, TimeoutError, GpulabError, "A wait ran out of time.");
pyo3::create_exception!(
    gpulab,
    StateError,
    GpulabError,
    "The lab's local state is unreadable or locked."
);

/// The Python exception for a core error, carrying the message the CLI prints.
fn to_py_err(py: Python<'_>, error: gpulab_core::Error) -> PyErr {
    use gpulab_core::Error as E;
    let message = error.to_string();
    match error {
        E::Spec(errors) => spec_error(py, &errors),
        E::Credentials { .. } => CredentialsError::new_err(message),
        E::Provision { .. } => ProvisionError::new_err(message),
        E::Cluster { .. } => ClusterError::new_err(message),
        E::Workspace { .. } => WorkspaceError::new_err(message),
        E::Remote { .. } => RemoteError::new_err(message),
        E::Timeout { .. } => TimeoutError::new_err(message),
        E::State { .. } => StateError::new_err(message),
        E::Io { .. } => GpulabError::new_err(message),
        E::Interrupted => pyo3::exceptions::PyKeyboardInterrupt::new_err(message),
    }
}

/// A `SpecError` whose `.errors` holds one dict per problem: field, value, source, problem, allowed.
fn spec_error(py: Python<'_>, errors: &SpecErrors) -> PyErr {
    let err = SpecError::new_err(errors.to_string());
    if let Ok(details) = to_python(py, &errors.0) {
        let _ = err.value(py).setattr("errors", details);
    }
    err
}

fn to_python<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| GpulabError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// Keyword arguments as a spec layer: `node_type="g5.xlarge"` → `[nodes] instance_type`. The names are
/// the CLI's flags with `_` for `-`; values are checked by the same rules as gpulab.toml, one argument at
/// a time so that an error names its argument.
fn layer_from_kwargs(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<SpecLayer> {
    let Some(kwargs) = kwargs else {
        return Ok(SpecLayer::default());
    };
    let dumps = py.import("json")?.getattr("dumps")?;
    let mut tree = serde_json::json!({});
    let mut errors = Vec::new();
    for (key, value) in kwargs.iter() {
        let key: String = key.extract()?;
        let path = gpulab_core::spec::option_field(&key).ok_or_else(|| {
            let known: Vec<&str> = gpulab_core::spec::OPTIONS.iter().map(|(o, _)| *o).collect();
            pyo3::exceptions::PyTypeError::new_err(format!(
                "unexpected keyword argument {key:?}; allowed: {}",
                known.join(", ")
            ))
        })?;
        let json: String = dumps.call1((&value,))?.extract()?;
        let mut value: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| GpulabError::new_err(e.to_string()))?;
        if key == "spot" {
            value = serde_json::json!(if value == true { "spot" } else { "on-demand" });
        }
        let mut single = serde_json::json!({});
        let slot = path
            .split('.')
            .fold(&mut single, |node, part| &mut node[part]);
        *slot = value.clone();
        if let Err(e) = serde_json::from_value::<SpecLayer>(single) {
            errors.push(gpulab_core::spec::FieldError {
                field: path.into(),
                value: json,
                source: gpulab_core::spec::Source::Argument(format!("{key}=")),
                problem: e.to_string(),
                allowed: format!("a value of the kind `gpulab config show` prints for {path}"),
            });
            continue;
        }
        *path
            .split('.')
            .fold(&mut tree, |node, part| &mut node[part]) = value;
    }
    if !errors.is_empty() {
        return Err(spec_error(py, &SpecErrors(errors)));
    }
    serde_json::from_value(tree).map_err(|e| SpecError::new_err(format!("invalid argument: {e}")))
}

fn resolve(
    py: Python<'_>,
    config: Option<std::path::PathBuf>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<gpulab_core::spec::ValidSpec> {
    let overrides = layer_from_kwargs(py, kwargs)?;
    let cwd = std::env::current_dir()
        .map_err(|e| to_py_err(py, gpulab_core::Error::io("read the working directory", e)))?;
    let mut inputs = SpecInputs::from_process(&cwd, config);
    inputs.overrides = overrides;
    inputs.override_source = Some(|field| {
        let option = gpulab_core::spec::OPTIONS
            .iter()
            .find(|(_, f)| *f == field)
            .map_or(field, |(o, _)| o);
        gpulab_core::spec::Source::Argument(format!("{option}="))
    });
    inputs
        .resolve()
        .and_then(|r| r.validate())
        .map_err(|e| spec_error(py, &e))
}

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
    m.add("GpulabError", py.get_type::<GpulabError>())?;
    m.add("SpecError", py.get_type::<SpecError>())?;
    m.add("CredentialsError", py.get_type::<CredentialsError>())?;
    m.add("ProvisionError", py.get_type::<ProvisionError>())?;
    m.add("ClusterError", py.get_type::<ClusterError>())?;
    m.add("WorkspaceError", py.get_type::<WorkspaceError>())?;
    m.add("RemoteError", py.get_type::<RemoteError>())?;
    m.add("TimeoutError", py.get_type::<TimeoutError>())?;
    m.add("StateError", py.get_type::<StateError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
