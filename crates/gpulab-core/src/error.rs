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
        /// The cloud's answer, when an API call failed: its code and status, and the SDK's error.
        #[source]
        cause: Option<ApiError>,
    },

    /// The Kubernetes API refused or failed a request.
    #[error("cluster: {message}{}", hint_suffix(hint))]
    Cluster {
        /// What failed.
        message: String,
        /// What the user can do about it, when gpulab knows.
        hint: Option<String>,
        /// The API server's answer, when a request failed: its reason and status, and kube's error.
        #[source]
        cause: Option<ApiError>,
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

    /// The API's answer behind a failed cloud or cluster call, if that is what this error is.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Provision { cause, .. } | Error::Cluster { cause, .. } => cause.as_ref(),
            _ => None,
        }
    }

    /// True when a cloud or cluster API said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.api().is_some_and(ApiError::is_not_found)
    }

    /// True when a cloud or cluster API said the object already exists or is in use, or a
    /// precondition failed (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        self.api().is_some_and(ApiError::is_conflict)
    }

    /// True when a cloud or cluster API refused the call for its rate: worth retrying later.
    pub fn is_throttled(&self) -> bool {
        self.api().is_some_and(ApiError::is_throttled)
    }
}

/// What a cloud or cluster API answered when a call failed: the service's error code and the HTTP
/// status, so that a caller tells a missing object from a conflict or throttling without reading the
/// message. The client library's own error (the AWS SDK's, kube's) is its source.
#[derive(Debug, thiserror::Error)]
#[error("{}", match (code, http_status) {
    (Some(code), Some(status)) => format!("{code} (HTTP {status})"),
    (Some(code), None) => code.clone(),
    (None, Some(status)) => format!("HTTP {status}"),
    (None, None) => "no answer".to_string(),
})]
pub struct ApiError {
    /// AWS's error code (`ResourceNotFoundException`, `InvalidVpcID.NotFound`, `Throttling`) or the
    /// Kubernetes Status reason (`NotFound`, `AlreadyExists`, `Conflict`).
    pub code: Option<String>,
    /// The status of the HTTP answer, when one came (none for a connection that failed).
    pub http_status: Option<u16>,
    /// The client library's error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl ApiError {
    /// True for 404, and for the AWS codes that mean the object is not there (EC2's `*.NotFound`,
    /// IAM's `NoSuchEntity`, EKS's `ResourceNotFoundException`, a gateway already detached).
    pub fn is_not_found(&self) -> bool {
        self.http_status == Some(404) || self.code.as_deref().is_some_and(code_is_not_found)
    }

    /// True for 409, and for the AWS codes that mean the object already exists or is in use.
    pub fn is_conflict(&self) -> bool {
        self.http_status == Some(409) || self.code.as_deref().is_some_and(code_is_conflict)
    }

    /// True for 429, and for the AWS throttling codes (EC2's `RequestLimitExceeded`, the JSON
    /// services' `ThrottlingException`, IAM's and STS's `Throttling`).
    pub fn is_throttled(&self) -> bool {
        self.http_status == Some(429) || self.code.as_deref().is_some_and(code_is_throttled)
    }
}

/// An AWS error code or Kubernetes reason that says the object does not exist.
pub(crate) fn code_is_not_found(code: &str) -> bool {
    code.ends_with("NotFound")
        || code.ends_with("NotFoundException")
        || matches!(code, "NoSuchEntity" | "Gateway.NotAttached")
}

/// An AWS error code or Kubernetes reason that says the object already exists, is in use, or changed
/// under the caller.
pub(crate) fn code_is_conflict(code: &str) -> bool {
    matches!(
        code,
        "AlreadyExists"
            | "Conflict"
            | "ResourceInUseException"
            | "EntityAlreadyExists"
            | "RouteAlreadyExists"
            | "Resource.AlreadyAssociated"
    ) || code.ends_with(".Duplicate")
}

/// An AWS error code or Kubernetes reason that says the call was refused for its rate.
pub(crate) fn code_is_throttled(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "TooManyRequests"
            | "SlowDown"
    )
}

/// `Result` with gpulab's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
