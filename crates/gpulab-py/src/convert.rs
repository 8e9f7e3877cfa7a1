//! Conversions between the core and Python: errors to exception classes, results to plain dicts and
//! lists (through JSON), keyword arguments to a spec layer.

use gpulab_core::spec::{FieldError, Source, SpecErrors, SpecInputs};
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

/// Options by name, with their values as JSON, as `SpecInputs::validate_options` takes them.
type Options = Vec<(String, serde_json::Value)>;

/// Keyword arguments as options (`node_type="g5.xlarge"`), named as the CLI's flags with `_` for `-`,
/// each value as JSON (paths as text). An unknown name is a `TypeError`, as Python's own; a value that
/// is not JSON-like is a problem of its option.
fn options_from_kwargs(
    py: Python<'_>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<(Options, Vec<FieldError>)> {
    let mut options = Vec::new();
    let mut errors = Vec::new();
    let Some(kwargs) = kwargs else {
        return Ok((options, errors));
    };
    let json = py.import("json")?;
    let fspath = py.import("os")?.getattr("fspath")?;
    for (key, value) in kwargs.iter() {
        let key: String = key.extract()?;
        let Some(field) = gpulab_core::spec::option_field(&key) else {
            let known: Vec<&str> = gpulab_core::spec::OPTIONS.iter().map(|(o, _)| *o).collect();
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "unexpected keyword argument {key:?}; allowed: {}",
                known.join(", ")
            )));
        };
        let dumps_kwargs = PyDict::new(py);
        dumps_kwargs.set_item("default", &fspath)?;
        let text = json
            .call_method("dumps", (&value,), Some(&dumps_kwargs))
            .and_then(|text| text.extract::<String>());
        match text.map(|text| serde_json::from_str(&text)) {
            Ok(Ok(value)) => options.push((key, value)),
            _ => errors.push(FieldError {
                field: field.into(),
                value: value.repr().map_or_else(|_| "?".into(), |r| r.to_string()),
                source: argument_source(field),
                problem: "not a value gpulab takes".into(),
                allowed: "str, int, bool, a path, a list or dict of str, or None".into(),
            }),
        }
    }
    Ok((options, errors))
}

/// How a keyword argument is named in errors and `spec` provenance: `argument node_type=`.
fn argument_source(field: &str) -> Source {
    Source::Argument(format!(
        "{}=",
        gpulab_core::spec::field_option(field).unwrap_or(field)
    ))
}

/// The lab's spec from defaults, gpulab.toml (or `config`), the environment, then the keyword
/// arguments; every problem at once, as a `SpecError`.
pub(crate) fn resolve(
    py: Python<'_>,
    config: Option<std::path::PathBuf>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<gpulab_core::spec::ValidSpec> {
    let (options, mut errors) = options_from_kwargs(py, kwargs)?;
    let cwd = std::env::current_dir()
        .map_err(|e| to_py_err(py, gpulab_core::Error::io("read the working directory", e)))?;
    let mut inputs = SpecInputs::from_process(&cwd, config);
    inputs.override_source = Some(argument_source);
    match inputs.validate_options(options) {
        Ok(spec) if errors.is_empty() => Ok(spec),
        Ok(_) => Err(spec_error(py, &SpecErrors(errors))),
        Err(SpecErrors(more)) => {
            errors.extend(more);
            Err(spec_error(py, &SpecErrors(errors)))
        }
    }
}
