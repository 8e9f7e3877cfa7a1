//! Layers of a spec: the partial specs that files, environment variables and explicit overrides give,
//! and the rule that folds them onto the defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    AccessMode, Capacity, FieldError, LabSpec, Provenance, ResolvedSpec, Source, SpecErrors,
    ValidSpec,
};

/// A partial spec: what one source says. `None` leaves the value of the layers below.
/// This is also the shape of `gpulab.toml`, so an unknown key in the file is an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecLayer {
    /// See [`LabSpec::name`].
    pub name: Option<String>,
    /// See [`LabSpec::region`].
    pub region: Option<String>,
    /// See [`LabSpec::kubernetes_version`].
    pub kubernetes_version: Option<String>,
    /// See [`LabSpec::nodes`].
    #[serde(default)]
    pub nodes: NodesLayer,
    /// See [`LabSpec::workspace`].
    #[serde(default)]
    pub workspace: WorkspaceLayer,
    /// See [`LabSpec::device_plugin`].
    #[serde(default)]
    pub device_plugin: DevicePluginLayer,
    /// See [`LabSpec::access`].
    #[serde(default)]
    pub access: AccessLayer,
    /// Tags to add; a layer adds to the tags below it, and may change their values.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// See [`LabSpec::autostop`].
    #[serde(default)]
    pub autostop: AutostopLayer,
}

/// The `[autostop]` table; see [`super::AutostopSpec`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AutostopLayer {
    pub idle: Option<String>,
    pub budget: Option<f64>,
}

/// The `[nodes]` table; see [`super::NodesSpec`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct NodesLayer {
    pub instance_type: Option<String>,
    pub min: Option<u32>,
    pub desired: Option<u32>,
    pub max: Option<u32>,
    pub capacity: Option<Capacity>,
    pub disk_gib: Option<u32>,
}

/// The `[workspace]` table; see [`super::WorkspaceSpec`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct WorkspaceLayer {
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    pub image: Option<String>,
    pub gpus: Option<u32>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub volume_size: Option<String>,
    pub storage_class: Option<String>,
    pub jupyter: Option<bool>,
    pub python_packages: Option<Vec<String>>,
    pub apt_packages: Option<Vec<String>>,
    pub ssh_public_key: Option<PathBuf>,
}

/// The `[device_plugin]` table; see [`super::DevicePluginSpec`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct DevicePluginLayer {
    pub time_slicing_replicas: Option<u32>,
}

/// The `[access]` table; see [`super::AccessSpec`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AccessLayer {
    pub mode: Option<AccessMode>,
    pub allowed_cidrs: Option<Vec<IpNet>>,
    pub api_cidrs: Option<Vec<IpNet>>,
}

/// The original scripts' environment variables and the field each sets, in the order they are read.
/// `AWS_DEFAULT_REGION` is the AWS CLI's older name; `AWS_REGION` wins when both are set.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("CLUSTER_NAME", "name"),
    ("AWS_DEFAULT_REGION", "region"),
    ("AWS_REGION", "region"),
    ("NODE_TYPE", "nodes.instance_type"),
    ("MIN_NODES", "nodes.min"),
    ("MAX_NODES", "nodes.max"),
    ("DESIRED_NODES", "nodes.desired"),
    ("POD_NAME", "workspace.pod_name"),
    ("SSH_KEY", "workspace.ssh_public_key"),
];

/// Everything a spec is resolved from. Frontends build it; tests build it by hand, so nothing here
/// reads the process environment unless asked to ([`SpecInputs::from_process`]).
#[derive(Debug, Clone, Default)]
pub struct SpecInputs {
    /// `gpulab.toml` files, lowest precedence first; a missing file is skipped.
    pub files: Vec<PathBuf>,
    /// A file the user named (`--config`): read instead of `files`, and it must exist.
    pub explicit_file: Option<PathBuf>,
    /// Environment variables (only those in [`ENV_VARS`] are read).
    pub env: BTreeMap<String, String>,
    /// Explicit overrides from the frontend.
    pub overrides: SpecLayer,
    /// How the frontend names each field, e.g. "nodes.min" → `Source::Flag("--min-nodes")`.
    pub override_source: Option<fn(&str) -> Source>,
    /// The home directory (for `~` and the default SSH keys).
    pub home: Option<PathBuf>,
}

/// The `gpulab.toml` files gpulab reads, lowest precedence first: the user's config directory, then
/// the working directory.
pub fn config_file_candidates(cwd: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(dir) = dirs::config_dir() {
        files.push(dir.join("gpulab").join("gpulab.toml"));
    }
    files.push(cwd.join("gpulab.toml"));
    files
}

impl SpecInputs {
    /// Inputs from this process: the config files around `cwd` (or only `config`, when given), the
    /// environment, and the home directory.
    pub fn from_process(cwd: &Path, config: Option<PathBuf>) -> Self {
        let env = ENV_VARS
            .iter()
            .filter_map(|(var, _)| std::env::var(var).ok().map(|v| (var.to_string(), v)))
            .collect();
        SpecInputs {
            files: config_file_candidates(cwd),
            explicit_file: config,
            env,
            home: dirs::home_dir(),
            ..Default::default()
        }
    }

    /// Fold defaults, files, environment and overrides into one spec; every unreadable file and
    /// unparsable variable is reported, together.
    pub fn resolve(&self) -> Result<ResolvedSpec, SpecErrors> {
        let mut spec = LabSpec::default();
        let mut provenance = Provenance::default();
        let mut errors = Vec::new();

        let files = match &self.explicit_file {
            Some(path) => std::slice::from_ref(path),
            None => &self.files[..],
        };
        for path in files {
            match read_file_layer(path, self.explicit_file.is_some()) {
                Ok(Some(layer)) => apply(&mut spec, &mut provenance, layer, &|_| {
                    Source::File(path.clone())
                }),
                Ok(None) => {}
                Err(e) => errors.push(*e),
            }
        }

        let (env_layer, env_errors) = env_layer(&self.env);
        errors.extend(env_errors);
        let env_source = |field: &str| {
            let var = ENV_VARS
                .iter()
                .rev()
                .find(|(var, f)| *f == field && self.env.contains_key(*var));
            Source::Env(var.map_or("?", |(var, _)| var).to_string())
        };
        apply(&mut spec, &mut provenance, env_layer, &env_source);

        let override_source = self
            .override_source
            .unwrap_or(|field| Source::Argument(field.to_string()));
        apply(
            &mut spec,
            &mut provenance,
            self.overrides.clone(),
            &override_source,
        );

        if errors.is_empty() {
            Ok(ResolvedSpec {
                spec,
                provenance,
                home: self.home.clone(),
            })
        } else {
            Err(SpecErrors(errors))
        }
    }
}

impl SpecInputs {
    /// Set each option on the overrides, as [`SpecLayer::set`] takes them (`("node_type", "g5.xlarge")`),
    /// then resolve and validate the spec. Every problem is reported at once: an unknown option or a
    /// value of the wrong kind, named by `override_source` as any override is, with the spec's own.
    pub fn validate_options(
        mut self,
        options: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> Result<ValidSpec, SpecErrors> {
        let source = self
            .override_source
            .unwrap_or(|field| Source::Argument(field.to_string()));
        let mut errors = Vec::new();
        for (option, value) in options {
            if let Err(e) = self.overrides.set(&option, value) {
                let source = source(e.field());
                errors.push(e.into_field_error(source));
            }
        }
        let validated = self.resolve().and_then(ResolvedSpec::validate);
        match validated {
            Ok(valid) if errors.is_empty() => Ok(valid),
            Ok(_) => Err(SpecErrors(errors)),
            Err(SpecErrors(more)) => {
                errors.extend(more);
                Err(SpecErrors(errors))
            }
        }
    }
}

fn read_file_layer(path: &Path, required: bool) -> Result<Option<SpecLayer>, Box<FieldError>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
        Err(e) => {
            return Err(Box::new(FieldError {
                field: "file".into(),
                value: path.display().to_string(),
                source: Source::File(path.to_owned()),
                problem: format!("cannot read it: {e}"),
                allowed: "a readable TOML file".into(),
            }));
        }
    };
    toml::from_str(&text).map(Some).map_err(|e| {
        let position = e.span().map(|span| {
            // Lines are numbered from 1; the newlines before the span say which one it starts on.
            let line = text[..span.start].matches('\n').count() + 1;
            format!(" at line {line}")
        });
        Box::new(FieldError {
            field: "file".into(),
            value: path.display().to_string(),
            source: Source::File(path.to_owned()),
            problem: format!(
                "not a valid gpulab.toml{}: {}",
                position.unwrap_or_default(),
                e.message()
            ),
            allowed:
                "the keys of `gpulab config show --output toml`: name, region, kubernetes_version, \
                      [nodes], [workspace], [device_plugin], [access], [tags], [autostop]"
                    .into(),
        })
    })
}

fn env_layer(env: &BTreeMap<String, String>) -> (SpecLayer, Vec<FieldError>) {
    let mut layer = SpecLayer::default();
    let mut errors = Vec::new();
    let mut count = |var: &str, field: &str, slot: &mut Option<u32>| {
        if let Some(raw) = env.get(var) {
            match raw.trim().parse() {
                Ok(n) => *slot = Some(n),
                Err(_) => errors.push(FieldError {
                    field: field.into(),
                    value: raw.clone(),
                    source: Source::Env(var.into()),
                    problem: "not a whole number".into(),
                    allowed: "a whole number of nodes, 0 to 100".into(),
                }),
            }
        }
    };
    count("MIN_NODES", "nodes.min", &mut layer.nodes.min);
    count("MAX_NODES", "nodes.max", &mut layer.nodes.max);
    count("DESIRED_NODES", "nodes.desired", &mut layer.nodes.desired);

    let text = |var: &str| {
        env.get(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    layer.name = text("CLUSTER_NAME");
    layer.region = text("AWS_REGION").or_else(|| text("AWS_DEFAULT_REGION"));
    layer.nodes.instance_type = text("NODE_TYPE");
    layer.workspace.pod_name = text("POD_NAME");
    layer.workspace.ssh_public_key = text("SSH_KEY").map(PathBuf::from);
    (layer, errors)
}

/// Fold `layer` onto `spec`, recording `source(field)` for each value it sets.
fn apply(
    spec: &mut LabSpec,
    provenance: &mut Provenance,
    layer: SpecLayer,
    source: &dyn Fn(&str) -> Source,
) {
    // `set`: the layer's value replaces the spec's; `some`: the spec's field is an Option.
    macro_rules! fold {
        (set $($field:ident).+ = $value:expr, $key:literal) => {
            if let Some(v) = $value {
                spec.$($field).+ = v;
                provenance.set($key, source($key));
            }
        };
        (some $($field:ident).+ = $value:expr, $key:literal) => {
            if let Some(v) = $value {
                spec.$($field).+ = Some(v);
                provenance.set($key, source($key));
            }
        };
    }
    let SpecLayer {
        name,
        region,
        kubernetes_version,
        nodes,
        workspace,
        device_plugin,
        access,
        tags,
        autostop,
    } = layer;
    fold!(set name = name, "name");
    fold!(set region = region, "region");
    fold!(some kubernetes_version = kubernetes_version, "kubernetes_version");
    fold!(set nodes.instance_type = nodes.instance_type, "nodes.instance_type");
    fold!(set nodes.min = nodes.min, "nodes.min");
    fold!(set nodes.desired = nodes.desired, "nodes.desired");
    fold!(set nodes.max = nodes.max, "nodes.max");
    fold!(set nodes.capacity = nodes.capacity, "nodes.capacity");
    fold!(set nodes.disk_gib = nodes.disk_gib, "nodes.disk_gib");
    fold!(set workspace.namespace = workspace.namespace, "workspace.namespace");
    fold!(set workspace.pod_name = workspace.pod_name, "workspace.pod_name");
    fold!(set workspace.image = workspace.image, "workspace.image");
    fold!(set workspace.gpus = workspace.gpus, "workspace.gpus");
    fold!(set workspace.cpu = workspace.cpu, "workspace.cpu");
    fold!(set workspace.memory = workspace.memory, "workspace.memory");
    fold!(set workspace.volume_size = workspace.volume_size, "workspace.volume_size");
    fold!(some workspace.storage_class = workspace.storage_class, "workspace.storage_class");
    fold!(set workspace.jupyter = workspace.jupyter, "workspace.jupyter");
    fold!(some workspace.python_packages = workspace.python_packages, "workspace.python_packages");
    fold!(some workspace.apt_packages = workspace.apt_packages, "workspace.apt_packages");
    fold!(some workspace.ssh_public_key = workspace.ssh_public_key, "workspace.ssh_public_key");
    fold!(set device_plugin.time_slicing_replicas = device_plugin.time_slicing_replicas, "device_plugin.time_slicing_replicas");
    fold!(set access.mode = access.mode, "access.mode");
    fold!(set access.allowed_cidrs = access.allowed_cidrs, "access.allowed_cidrs");
    fold!(set access.api_cidrs = access.api_cidrs, "access.api_cidrs");
    fold!(some autostop.idle = autostop.idle, "autostop.idle");
    fold!(some autostop.budget = autostop.budget, "autostop.budget");
    if !tags.is_empty() {
        spec.tags.extend(tags);
        provenance.set("tags", source("tags"));
    }
}

/// Every field name, in the order `gpulab config show` lists them.
pub(crate) const FIELDS: &[&str] = &[
    "name",
    "region",
    "kubernetes_version",
    "nodes.instance_type",
    "nodes.min",
    "nodes.desired",
    "nodes.max",
    "nodes.capacity",
    "nodes.disk_gib",
    "workspace.namespace",
    "workspace.pod_name",
    "workspace.image",
    "workspace.gpus",
    "workspace.cpu",
    "workspace.memory",
    "workspace.volume_size",
    "workspace.storage_class",
    "workspace.jupyter",
    "workspace.python_packages",
    "workspace.apt_packages",
    "workspace.ssh_public_key",
    "device_plugin.time_slicing_replicas",
    "access.mode",
    "access.allowed_cidrs",
    "access.api_cidrs",
    "tags",
    "autostop.idle",
    "autostop.budget",
];

/// The flat option names frontends take (Python keyword arguments; CLI flags with `-` for `_`), and the
/// field each sets. `spot` takes a bool for `nodes.capacity`.
pub const OPTIONS: &[(&str, &str)] = &[
    ("name", "name"),
    ("region", "region"),
    ("kubernetes_version", "kubernetes_version"),
    ("node_type", "nodes.instance_type"),
    ("min_nodes", "nodes.min"),
    ("desired_nodes", "nodes.desired"),
    ("max_nodes", "nodes.max"),
    ("spot", "nodes.capacity"),
    ("disk", "nodes.disk_gib"),
    ("namespace", "workspace.namespace"),
    ("pod_name", "workspace.pod_name"),
    ("image", "workspace.image"),
    ("gpus", "workspace.gpus"),
    ("cpu", "workspace.cpu"),
    ("memory", "workspace.memory"),
    ("volume_size", "workspace.volume_size"),
    ("storage_class", "workspace.storage_class"),
    ("jupyter", "workspace.jupyter"),
    ("python_packages", "workspace.python_packages"),
    ("apt_packages", "workspace.apt_packages"),
    ("ssh_key", "workspace.ssh_public_key"),
    ("time_slicing", "device_plugin.time_slicing_replicas"),
    ("access", "access.mode"),
    ("allowed_cidrs", "access.allowed_cidrs"),
    ("api_cidrs", "access.api_cidrs"),
    ("tags", "tags"),
    ("autostop", "autostop.idle"),
    ("budget", "autostop.budget"),
];

/// The field an option sets, e.g. "node_type" → "nodes.instance_type".
pub fn option_field(option: &str) -> Option<&'static str> {
    OPTIONS
        .iter()
        .find(|(o, _)| *o == option)
        .map(|(_, field)| *field)
}

/// The option that sets a field, e.g. "nodes.instance_type" → "node_type".
pub fn field_option(field: &str) -> Option<&'static str> {
    OPTIONS
        .iter()
        .find(|(_, f)| *f == field)
        .map(|(option, _)| *option)
}

/// An option [`SpecLayer::set`] refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionError {
    /// No option has this name.
    #[error("no option {option:?}; the options are: {}", option_names())]
    Unknown {
        /// The name given.
        option: String,
        /// The value given, as [`OptionError::Invalid`] has it.
        value: String,
    },
    /// The value is not of the kind the option takes.
    #[error("{option} = {value:?}: {problem}\n    allowed: {allowed}")]
    Invalid {
        /// The option, e.g. "min_nodes".
        option: &'static str,
        /// The field it sets, e.g. "nodes.min".
        field: &'static str,
        /// The value: text as it is, anything else as JSON.
        value: String,
        /// What is wrong with it.
        problem: String,
        /// What the option takes.
        allowed: &'static str,
    },
}

impl OptionError {
    /// The field the option sets, or the unknown option's name.
    pub fn field(&self) -> &str {
        match self {
            OptionError::Unknown { option, .. } => option,
            OptionError::Invalid { field, .. } => field,
        }
    }

    /// This error as one problem of a spec, from `source` (the flag or argument that gave the value).
    pub fn into_field_error(self, source: Source) -> FieldError {
        match self {
            OptionError::Unknown { option, value } => FieldError {
                field: option,
                value,
                source,
                problem: "no such option".into(),
                allowed: option_names(),
            },
            OptionError::Invalid {
                field,
                value,
                problem,
                allowed,
                ..
            } => FieldError {
                field: field.into(),
                value,
                source,
                problem,
                allowed: allowed.into(),
            },
        }
    }
}

/// Every option's name, comma-separated, in [`OPTIONS`]'s order.
fn option_names() -> String {
    OPTIONS
        .iter()
        .map(|(option, _)| *option)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`SpecLayer::set`] says each kind of option takes.
const TEXT: &str = "text";
const COUNT: &str = "a whole number, 0 or more";
const FLAG: &str = "true or false";
const PATH: &str = "a file path";
const ACCESS: &str = "\"port-forward\" or \"load-balancer\"";
const PACKAGES: &str = "a list of package names, e.g. [\"transformers\", \"datasets==3.0.0\"]";
const CIDRS: &str = "a list of address ranges, e.g. [\"203.0.113.7/32\"]";
const TAGS: &str = "a map of text keys to text values, e.g. {\"team\": \"ml\"}";
const DURATION: &str = "a duration such as \"30m\", \"2h\" or \"1h30m\", or \"off\"";
const DOLLARS: &str = "an amount of US dollars, e.g. 25, or \"off\" (or 0) for none";

impl SpecLayer {
    /// Set one option by the name every frontend shares ([`OPTIONS`]: the Python keyword arguments, the
    /// CLI's flags with `-` for `_`, the methods of [`crate::LabBuilder`]), e.g. `node_type` sets
    /// `[nodes] instance_type` and `spot = true` sets `[nodes] capacity = "spot"`.
    ///
    /// Here the value's kind is checked (text, a whole number, true or false, ...); whether it makes
    /// sense (a known instance type, `min_nodes` ≤ `max_nodes`) is checked with the rest of the spec by
    /// [`super::ResolvedSpec::validate`]. `null` unsets the option, so the layers below decide; `tags`
    /// add to the tags set before.
    ///
    /// ```
    /// use gpulab_model::spec::SpecLayer;
    /// use serde_json::json;
    ///
    /// let mut layer = SpecLayer::default();
    /// layer.set("node_type", json!("g5.xlarge"))?;
    /// layer.set("spot", json!(true))?;
    /// assert_eq!(layer.nodes.instance_type.as_deref(), Some("g5.xlarge"));
    ///
    /// let error = layer.set("min_nodes", json!("two")).unwrap_err();
    /// assert_eq!(error.to_string(), "min_nodes = \"two\": not a whole number\n    allowed: a whole number, 0 or more");
    /// # Ok::<(), gpulab_model::spec::OptionError>(())
    /// ```
    pub fn set(&mut self, option: &str, value: serde_json::Value) -> Result<(), OptionError> {
        let Some((option, field)) = OPTIONS.iter().find(|(o, _)| *o == option).copied() else {
            return Err(OptionError::Unknown {
                option: option.into(),
                value: as_written(&value),
            });
        };
        let check = Check {
            option,
            field,
            value: &value,
        };
        match option {
            "name" => self.name = check.text()?,
            "region" => self.region = check.text()?,
            "kubernetes_version" => self.kubernetes_version = check.text()?,
            "node_type" => self.nodes.instance_type = check.text()?,
            "min_nodes" => self.nodes.min = check.count()?,
            "desired_nodes" => self.nodes.desired = check.count()?,
            "max_nodes" => self.nodes.max = check.count()?,
            "spot" => {
                self.nodes.capacity = check.flag()?.map(|spot| {
                    if spot {
                        Capacity::Spot
                    } else {
                        Capacity::OnDemand
                    }
                })
            }
            "disk" => self.nodes.disk_gib = check.count()?,
            "namespace" => self.workspace.namespace = check.text()?,
            "pod_name" => self.workspace.pod_name = check.text()?,
            "image" => self.workspace.image = check.text()?,
            "gpus" => self.workspace.gpus = check.count()?,
            "cpu" => self.workspace.cpu = check.text()?,
            "memory" => self.workspace.memory = check.text()?,
            "volume_size" => self.workspace.volume_size = check.text()?,
            "storage_class" => self.workspace.storage_class = check.text()?,
            "jupyter" => self.workspace.jupyter = check.flag()?,
            "python_packages" => self.workspace.python_packages = check.texts(PACKAGES)?,
            "apt_packages" => self.workspace.apt_packages = check.texts(PACKAGES)?,
            "ssh_key" => {
                self.workspace.ssh_public_key = check.text_as(PATH)?.map(PathBuf::from);
            }
            "time_slicing" => self.device_plugin.time_slicing_replicas = check.count()?,
            "access" => {
                self.access.mode = match check.text_as(ACCESS)?.as_deref() {
                    None => None,
                    Some("port-forward") => Some(AccessMode::PortForward),
                    Some("load-balancer") => Some(AccessMode::LoadBalancer),
                    Some(_) => return Err(check.invalid("not an access mode", ACCESS)),
                }
            }
            "allowed_cidrs" => self.access.allowed_cidrs = check.cidrs()?,
            "api_cidrs" => self.access.api_cidrs = check.cidrs()?,
            "tags" => self.tags.extend(check.tags()?),
            "autostop" => self.autostop.idle = check.text_as(DURATION)?,
            "budget" => self.autostop.budget = check.dollars()?,
            _ => unreachable!("every option in OPTIONS is handled: {option}"),
        }
        Ok(())
    }
}

/// A value as the user wrote it, for messages: text as it is, anything else as JSON.
fn as_written(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// One value given for one option, checked for the kind the option takes.
struct Check<'a> {
    option: &'static str,
    field: &'static str,
    value: &'a serde_json::Value,
}

impl Check<'_> {
    fn invalid(&self, problem: &str, allowed: &'static str) -> OptionError {
        OptionError::Invalid {
            option: self.option,
            field: self.field,
            value: as_written(self.value),
            problem: problem.into(),
            allowed,
        }
    }

    fn text(&self) -> Result<Option<String>, OptionError> {
        self.text_as(TEXT)
    }

    fn text_as(&self, allowed: &'static str) -> Result<Option<String>, OptionError> {
        match self.value {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(text) => Ok(Some(text.clone())),
            _ => Err(self.invalid("not text", allowed)),
        }
    }

    fn count(&self) -> Result<Option<u32>, OptionError> {
        match self.value {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.invalid("not a whole number of 0 or more", COUNT)),
            _ => Err(self.invalid("not a whole number", COUNT)),
        }
    }

    fn flag(&self) -> Result<Option<bool>, OptionError> {
        match self.value {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::Bool(flag) => Ok(Some(*flag)),
            _ => Err(self.invalid("not true or false", FLAG)),
        }
    }

    fn texts(&self, allowed: &'static str) -> Result<Option<Vec<String>>, OptionError> {
        let items = match self.value {
            serde_json::Value::Null => return Ok(None),
            serde_json::Value::Array(items) => items,
            _ => return Err(self.invalid("not a list", allowed)),
        };
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.invalid(&format!("{item} is not text"), allowed))
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    fn cidrs(&self) -> Result<Option<Vec<IpNet>>, OptionError> {
        let items = match self.value {
            serde_json::Value::Null => return Ok(None),
            serde_json::Value::Array(items) => items,
            _ => return Err(self.invalid("not a list", CIDRS)),
        };
        items
            .iter()
            .map(|item| {
                let text = item
                    .as_str()
                    .ok_or_else(|| self.invalid(&format!("{item} is not text"), CIDRS))?;
                text.trim()
                    .parse()
                    .map_err(|_| self.invalid(&format!("{text:?} is not an address range"), CIDRS))
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// An amount of dollars; "off" is 0, which means no budget (so a flag can turn off a file's
    /// budget); `null` leaves the layers below to decide.
    fn dollars(&self) -> Result<Option<f64>, OptionError> {
        match self.value {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(text) if text.trim() == "off" => Ok(Some(0.0)),
            serde_json::Value::String(text) => text
                .trim()
                .trim_start_matches('$')
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Some)
                .ok_or_else(|| self.invalid("not an amount of dollars", DOLLARS)),
            serde_json::Value::Number(n) => n
                .as_f64()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Some)
                .ok_or_else(|| self.invalid("not an amount of dollars", DOLLARS)),
            _ => Err(self.invalid("not an amount of dollars", DOLLARS)),
        }
    }

    fn tags(&self) -> Result<BTreeMap<String, String>, OptionError> {
        let entries = match self.value {
            serde_json::Value::Null => return Ok(BTreeMap::new()),
            serde_json::Value::Object(entries) => entries,
            _ => return Err(self.invalid("not a map", TAGS)),
        };
        entries
            .iter()
            .map(|(key, value)| match value.as_str() {
                Some(text) => Ok((key.clone(), text.to_string())),
                None => Err(self.invalid(&format!("the value of {key:?} is not text"), TAGS)),
            })
            .collect()
    }
}
