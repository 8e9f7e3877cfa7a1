//! Conversions between the core and Python: errors to exception classes, results to plain dicts and
//! lists (through JSON), keyword arguments to a spec layer.

use gpulab_core::spec::{SpecErrors, SpecInputs, SpecLayer};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{
    ClusterError, CredentialsError, GpulabError, OwnershipError, ProvisionError, RemoteError,
    SpecError, StateError, TimeoutError, WorkspaceError,
};

/// The Python exception for a core error, carrying the message the CLI prints.
pub(crate) fn to_py_err(py: Python<'_>, error: gpulab_core::Error) -> PyErr {
    use gpulab_core::Error as E;
    let message = error.to_string();
    match error {
        E::Spec(errors) => spec_error(py, &errors),
        E::Usage { .. } => pyo3::exceptions::PyValueError::new_err(message),
        E::Credentials { .. } => CredentialsError::new_err(message),
        E::Provision { .. } => ProvisionError::new_err(message),
        E::Cluster { .. } => ClusterError::new_err(message),
        E::Workspace { .. } => WorkspaceError::new_err(message),
        E::Remote { .. } => RemoteError::new_err(message),
        E::Ownership { .. } => OwnershipError::new_err(message),
        E::Timeout { .. } => TimeoutError::new_err(message),
        E::State { .. } => StateError::new_err(message),
        E::Io { .. } => GpulabError::new_err(message),
        E::Interrupted => pyo3::exceptions::PyKeyboardInterrupt::new_err(message),
    }
}

/// A `SpecError` whose `.errors` holds one dict per problem: field, value, source, problem, allowed.
pub(crate) fn spec_error(py: Python<'_>, errors: &SpecErrors) -> PyErr {
    let err = SpecError::new_err(errors.to_string());
    if let Ok(details) = to_python(py, &errors.0) {
        let _ = err.value(py).setattr("errors", details);
    }
    err
}

/// `value` as plain Python data (dicts, lists, str, int, float, bool, None), through JSON. Durations
/// become float seconds and timestamps float seconds since the Unix epoch.
pub(crate) fn to_python<'py>(
    py: Python<'py>,
    value: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let mut json = serde_json::to_value(value).map_err(|e| GpulabError::new_err(e.to_string()))?;
    seconds(&mut json);
    let text = json.to_string();
    py.import("json")?.call_method1("loads", (text,))
}

/// Replace serde's `{secs, nanos}` (Duration) and `{secs_since_epoch, nanos_since_epoch}` (SystemTime)
/// with seconds, everywhere in `value`.
fn seconds(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let pair = |s: &str, n: &str| {
                (map.len() == 2)
                    .then(|| Some(map.get(s)?.as_f64()? + map.get(n)?.as_f64()? / 1e9))
                    .flatten()
            };
            if let Some(secs) =
                pair("secs", "nanos").or_else(|| pair("secs_since_epoch", "nanos_since_epoch"))
            {
                *value = serde_json::json!(secs);
            } else {
                map.values_mut().for_each(seconds);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(seconds),
        _ => {}
    }
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

pub(crate) fn resolve(
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
