//! gpulab's error type. Each variant is one kind of failure a user can act on; its message says what went
//! wrong and, where there is one, what to do. The Python bindings map each variant to its own exception
//! class, so adding a variant is a user-visible change.

use std::path::PathBuf;
use std::time::Duration;

use crate::spec::SpecErrors;

/// Everything gpulab-core can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lab's spec is invalid: every problem found, each naming its field, value and source.
    #[error(transparent)]
    Spec(#[from] SpecErrors),

    /// A command line that cannot work whatever the lab's state (not a spec field): say what is
    /// wrong and what would work.
    #[error("{message}\n  hint: {hint}")]
    Usage {
        /// What is wrong, naming the argument or flag.
        message: String,
        /// What would work, e.g. the corrected command.
        hint: String,
    },

    /// No usable cloud credentials, or the cloud refused them.
    #[error("credentials: {message}\n  hint: {hint}")]
    Credentials {
        /// What failed.
        message: String,
        /// What the user can do about it.
        hint: String,
    },

    /// A cloud provisioning step failed.
    #[error("{step}: {message}{}", hint_suffix(hint))]
    Provision {
        /// The step, e.g. "create node group".
        step: String,
        /// What the cloud said, without the SDK's wrapping.
        message: String,
        /// What the user can do about it, when gpulab knows.
        hint: Option<String>,
    },

    /// The Kubernetes API refused or failed a request.
    #[error("cluster: {message}{}", hint_suffix(hint))]
    Cluster {
        /// What failed.
        message: String,
        /// What the user can do about it, when gpulab knows.
        hint: Option<String>,
    },

    /// The workspace pod could not be created or never became ready.
    #[error("workspace: {message}{}", hint_suffix(hint))]
    Workspace {
        /// What is wrong, from the pod's conditions and events where possible.
        message: String,
        /// What the user can do about it, when gpulab knows.
        hint: Option<String>,
    },

    /// Running a command, copying files or forwarding a port in the workspace failed.
    #[error("remote: {message}{}", hint_suffix(hint))]
    Remote {
        /// What failed.
        message: String,
        /// What the user can do about it, when gpulab knows.
        hint: Option<String>,
    },

    /// Something with the lab's name exists but does not carry the lab's ID: another tool's, another
    /// lab's or a person's. gpulab neither adopts, changes nor deletes it.
    #[error("{resource} is not this lab's: {message}\n  hint: {hint}")]
    Ownership {
        /// What it is, e.g. "EKS cluster gpu-learning-cluster".
        resource: String,
        /// What shows it is not the lab's.
        message: String,
        /// What the user can do: another lab name, or removing it themselves.
        hint: String,
    },

    /// A wait ran out of time.
    #[error("timed out after {}s waiting for {what}; still pending: {pending}", waited.as_secs())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long gpulab waited.
        waited: Duration,
        /// What had not happened yet.
        pending: String,
    },

    /// The lab's local state is unreadable, or another process holds its lock.
    #[error("lab state {}: {message}", path.display())]
    State {
        /// The state file or lock.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What gpulab was doing, naming the file.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The user interrupted the operation (Ctrl-C); what was created so far is recorded.
    #[error(
        "interrupted; rerun the same command to resume, or `gpulab down` to remove what was created"
    )]
    Interrupted,
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_deref()
        .map(|h| format!("\n  hint: {h}"))
        .unwrap_or_default()
}

impl Error {
    /// An [`Error::Io`] for `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True for errors caused by the user's input rather than by the world: the CLI exits with 2 for them.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Spec(_) | Error::Usage { .. })
    }
}

/// `Result` with gpulab's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
