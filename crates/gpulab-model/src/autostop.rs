//! Autostop's settings and the agent's facts, without I/O: the idle and budget guard a spec asks for,
//! the agent's permissions and requests, its settings file, and the state it reports. The programs and
//! the cluster side are in gpulab-core's `autostop`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

// The agent's requests are a capacity fact, and the idle and budget guard a spec value: both are
// defined there and belong to autostop's vocabulary as well.
pub use crate::capacity::AGENT_REQUESTS;
use crate::spec::ValidSpec;
pub use crate::spec::guard::{
    Guard, GuardProblem, MAX_IDLE, MIN_IDLE, format_duration, parse_idle,
};

/// The agent's image: the Docker official Python image, from ECR Public's mirror of Docker Hub's
/// library (no Docker Hub pull limits on EKS).
pub const AGENT_IMAGE: &str = "public.ecr.aws/docker/library/python:3.12-slim-bookworm";
/// The activity reporter's port in the workspace pod (cluster-internal only; never on a load balancer).
pub const ACTIVITY_PORT: u16 = 9102;
/// The name of the agent role's inline policy.
pub const AGENT_POLICY: &str = "gpulab-autostop";
/// Every AWS action the agent may call, on the lab's node group only.
pub const AGENT_EKS_ACTIONS: [&str; 2] = ["eks:DescribeNodegroup", "eks:UpdateNodegroupConfig"];
/// How long before an idle stop the workspace is warned.
pub const WARN_BEFORE: Duration = Duration::from_secs(5 * 60);
/// GPU utilisation (percent) at or above which the GPU counts as in use.
pub const GPU_BUSY_PERCENT: u32 = 10;
/// The share of the budget at which the workspace and `status` warn.
pub const BUDGET_WARN_FRACTION: f64 = 0.8;

/// The ARN pattern of the lab's node group as the agent's policy names it (any account: the policy is
/// attached in the lab's own account; the node group's ID suffix is not known before it exists).
pub fn node_group_arn_pattern(spec: &ValidSpec) -> String {
    let names = crate::naming::AwsNames::new(&spec.spec);
    format!(
        "arn:aws:eks:{}:*:nodegroup/{}/{}/*",
        spec.spec.region, names.cluster, names.node_group
    )
}

/// The document of the agent role's inline policy [`AGENT_POLICY`]: [`AGENT_EKS_ACTIONS`] on the lab's
/// node group, and nothing else.
pub fn agent_policy(spec: &ValidSpec) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": AGENT_EKS_ACTIONS,
            "Resource": node_group_arn_pattern(spec),
        }],
    })
    .to_string()
}

/// What the agent stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Target {
    /// An AWS lab: its GPU node group, scaled to zero.
    EksNodegroup {
        /// The region.
        region: String,
        /// The EKS cluster.
        cluster: String,
        /// The node group.
        nodegroup: String,
    },
    /// A lab on an existing cluster: the workspace's StatefulSet, scaled to zero replicas.
    Statefulset {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// Where the agent keeps its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRef {
    /// The ConfigMap's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The agent's settings file (`settings.json` in its ConfigMap; it rereads it every tick, so `gpulab
/// autostop` changes a running agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The lab's name.
    pub lab: String,
    /// The lab's ID.
    pub lab_id: String,
    /// The idle period in seconds; `None`: no idle stop.
    pub idle_seconds: Option<u64>,
    /// The budget in US dollars; `None`: no cap.
    pub budget_usd: Option<f64>,
    /// What the lab costs per hour with no GPU node running (control plane, volumes).
    pub idle_per_hour: f64,
    /// What each running GPU node adds per hour (instance, root disk, public address).
    pub node_per_hour: f64,
    /// GPU utilisation that counts as use, percent.
    pub gpu_busy_percent: u32,
    /// How long before an idle stop the workspace is warned, seconds.
    pub warn_seconds: u64,
    /// What the lab had spent at `spent_at`, as gpulab computed it: the ledger's starting point.
    pub spent_usd: f64,
    /// When, Unix seconds.
    pub spent_at: u64,
    /// What to stop.
    pub target: Target,
    /// The activity reporter's base URL.
    pub activity_url: String,
    /// Where the agent keeps its state.
    pub state: StateRef,
}

impl Settings {
    /// The settings for lab `id` of `spec`, stopping `target`, with the ledger starting from
    /// `spent_usd` at `now`. An AWS lab is priced from the catalog, as `cost` prices it; a lab on an
    /// existing cluster is not priced (its budget cannot be set: gpulab-core's `Lab` refuses it).
    pub fn new(
        spec: &ValidSpec,
        id: &crate::naming::LabId,
        target: Target,
        spent_usd: f64,
        now: SystemTime,
    ) -> Self {
        let names = crate::naming::KubeNames::new(&spec.spec);
        let (idle_per_hour, node_per_hour) = match target {
            Target::EksNodegroup { .. } => {
                let at = |nodes: u32| {
                    let mut spec = spec.clone();
                    spec.spec.nodes.desired = nodes;
                    crate::cost::CostEstimate::for_spec(&spec).per_hour
                };
                (at(0), at(1) - at(0))
            }
            Target::Statefulset { .. } => (0.0, 0.0),
        };
        Settings {
            lab: spec.name().to_string(),
            lab_id: id.to_string(),
            idle_seconds: spec.autostop.idle.map(|d| d.as_secs()),
            budget_usd: spec.autostop.budget_usd,
            idle_per_hour,
            node_per_hour,
            gpu_busy_percent: GPU_BUSY_PERCENT,
            warn_seconds: WARN_BEFORE.as_secs(),
            spent_usd,
            spent_at: unix(now) as u64,
            target,
            activity_url: format!(
                "http://{}.{}.svc:{ACTIVITY_PORT}",
                names.activity_service, names.namespace
            ),
            state: StateRef {
                namespace: names.namespace.clone(),
                name: names.autostop_state.clone(),
            },
        }
    }
}

/// Why the agent stopped the lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    /// When, Unix seconds.
    pub at: f64,
    /// "idle" or "budget".
    pub reason: String,
    /// In words, e.g. "idle for 30m".
    #[serde(default)]
    pub message: String,
}

/// The state the agent writes every tick (`state.json` in its state ConfigMap), as `status` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// When the agent last wrote it, Unix seconds.
    pub updated_at: f64,
    /// GPU nodes (or workspace replicas) running at the last tick.
    #[serde(default)]
    pub nodes: Option<u32>,
    /// When activity was last seen.
    pub last_active: f64,
    /// Why the lab counted as in use at the last tick, in words; empty when idle.
    #[serde(default)]
    pub active: Vec<String>,
    /// When the idle stop will come if nothing changes.
    #[serde(default)]
    pub stop_at: Option<f64>,
    /// The ledger: US dollars spent since `up`, as of `spent_at`.
    pub spent_usd: f64,
    /// When the ledger was last brought up to date.
    pub spent_at: f64,
    /// Whether the 80 % budget warning was given.
    #[serde(default)]
    pub budget_warned: bool,
    /// Set when the agent stopped the lab.
    #[serde(default)]
    pub stopped: Option<Stopped>,
    /// Workspace restarts while the lab was not stopped: spot interruptions, node replacements.
    #[serde(default)]
    pub disruptions: u32,
    /// The last failure (AWS, Kubernetes, reporter unreachable), or none.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl AgentState {
    /// How long the lab has been idle at `now` (zero while in use).
    pub fn idle_for(&self, now: SystemTime) -> Duration {
        if !self.active.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((unix(now) - self.last_active).max(0.0))
    }

    /// The idle stop's time, when one is due.
    pub fn stop_time(&self) -> Option<SystemTime> {
        self.stop_at.map(from_unix)
    }
}

/// Autostop as `status` shows it: the settings, what the agent last saw, and what comes next.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutostopStatus {
    /// The settings.
    pub settings: Guard,
    /// What the agent last wrote; `None` before its first tick (or while it is off).
    pub agent: Option<AgentState>,
    /// What happens next, in words, e.g. "idle for 12m; the GPU nodes stop at 14:05 UTC (in 18m)
    /// unless the lab is used".
    pub next: String,
    /// Things to act on: the budget 80 % spent, a failure the agent reports.
    pub warnings: Vec<String>,
}

impl AutostopStatus {
    /// The status from the settings and the agent's state at `now`.
    pub fn new(settings: Guard, agent: Option<AgentState>, now: SystemTime) -> Self {
        let mut warnings = Vec::new();
        let next = match (&agent, settings.is_on()) {
            (_, false) => "off".to_string(),
            (None, true) => "the agent has not reported yet (it checks every 30 s)".to_string(),
            (Some(a), true) => {
                if let Some(budget) = settings.budget_usd
                    && a.spent_usd >= BUDGET_WARN_FRACTION * budget
                {
                    warnings.push(format!(
                        "${:.2} of the ${budget:.2} budget spent ({:.0}%): at 100% the GPU nodes are scaled to 0",
                        a.spent_usd,
                        100.0 * a.spent_usd / budget
                    ));
                }
                if let Some(error) = &a.last_error {
                    warnings.push(format!("the autostop agent reports: {error}"));
                }
                describe_next(&settings, a, now)
            }
        };
        AutostopStatus {
            settings,
            agent,
            next,
            warnings,
        }
    }
}

fn describe_next(settings: &Guard, a: &AgentState, now: SystemTime) -> String {
    if let Some(stopped) = &a.stopped {
        return format!(
            "stopped the GPU nodes at {} ({}); `gpulab start` brings the lab back",
            clock(from_unix(stopped.at)),
            stopped.message
        );
    }
    if a.nodes == Some(0) {
        return "the lab is stopped; `gpulab start` brings it back".into();
    }
    let mut parts = Vec::new();
    if let Some(idle) = settings.idle {
        if !a.active.is_empty() {
            parts.push(format!(
                "in use ({}); stops after {} idle",
                a.active.join(", "),
                format_duration(idle)
            ));
        } else {
            let idle_for = a.idle_for(now);
            let stop = a
                .stop_time()
                .unwrap_or_else(|| from_unix(a.last_active) + idle);
            let left = stop.duration_since(now).unwrap_or_default();
            parts.push(format!(
                "idle for {}; the GPU nodes stop at {} (in {}) unless the lab is used",
                format_duration(Duration::from_secs(idle_for.as_secs() / 60 * 60)),
                clock(stop),
                format_duration(Duration::from_secs(left.as_secs().div_ceil(60) * 60))
            ));
        }
    }
    if let Some(budget) = settings.budget_usd {
        parts.push(format!(
            "${:.2} of the ${budget:.2} budget spent; the GPU nodes stop at ${budget:.2}",
            a.spent_usd
        ));
    }
    if a.disruptions > 0 {
        parts.push(format!(
            "{} disruption{} so far (spot interruption or node replacement; /workspace was kept)",
            a.disruptions,
            if a.disruptions == 1 { "" } else { "s" }
        ));
    }
    parts.join("; ")
}

/// A time as a UTC wall clock, "14:05 UTC".
pub fn clock(t: SystemTime) -> String {
    let secs = unix(t) as u64;
    format!("{:02}:{:02} UTC", secs % 86_400 / 3_600, secs % 3_600 / 60)
}

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The time `secs` after the Unix epoch.
pub fn from_unix(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_periods_parse_as_written() {
        let m = |n: u64| Some(Duration::from_secs(n * 60));
        assert_eq!(parse_idle("30m"), Ok(m(30)));
        assert_eq!(parse_idle("1h30m"), Ok(m(90)));
        assert_eq!(parse_idle(" 1h 30m "), Ok(m(90)));
        assert_eq!(parse_idle("2h"), Ok(m(120)));
        assert_eq!(parse_idle("1d"), Ok(m(1440)));
        assert_eq!(parse_idle("off"), Ok(None));
        assert!(parse_idle("5m").unwrap_err().contains("outside 10m to 7d"));
        assert!(parse_idle("30").unwrap_err().contains("without a unit"));
        assert!(parse_idle("30x").unwrap_err().contains("not a unit"));
        assert!(parse_idle("m").unwrap_err().contains("number must come"));
        assert!(parse_idle("8d").is_err());
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(format_duration(Duration::from_secs(93_600)), "1d 2h");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn the_agent_may_resize_the_labs_node_group_and_nothing_else() {
        let spec = crate::spec::SpecInputs {
            home: Some(tempfile::tempdir().unwrap().path().into()),
            ..Default::default()
        }
        .resolve()
        .unwrap()
        .validate()
        .unwrap();
        let policy: serde_json::Value = serde_json::from_str(&agent_policy(&spec)).unwrap();
        let statements = policy["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0]["Effect"], "Allow");
        assert_eq!(
            statements[0]["Action"],
            serde_json::json!(["eks:DescribeNodegroup", "eks:UpdateNodegroupConfig"])
        );
        assert_eq!(
            statements[0]["Resource"],
            "arn:aws:eks:us-west-2:*:nodegroup/gpu-learning-cluster/gpu-learning-cluster-gpu/*"
        );
    }
}
