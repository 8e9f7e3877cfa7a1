//! The EKS provisioner: a GPU cluster from the AWS APIs themselves (EC2, IAM, EKS, STS, Service Quotas,
//! Resource Groups Tagging), with no eksctl, CloudFormation or aws CLI.
//!
//! Every step finds its resource by the lab's ID tag (or by its derived name, then checks the tag)
//! before creating it, so a `provision` stopped anywhere resumes without duplicates, and `teardown`
//! deletes in dependency order, treating "already gone" as done, then sweeps for anything still
//! carrying the lab's ID. A resource with the lab's name but not its ID is never used, changed or
//! deleted.
//!
//! ```no_run
//! # async fn f(spec: &gpulab_core::spec::ValidSpec) -> gpulab_core::Result<()> {
//! use gpulab_core::events::Silent;
//! use gpulab_core::naming::LabId;
//! use gpulab_core::provision::ClusterProvisioner;
//! use gpulab_core::provision::aws::{AwsOptions, AwsProvisioner};
//!
//! let aws = AwsProvisioner::connect(spec, AwsOptions::default()).await;
//! let id = LabId::generate().expect("the system's random source");
//! let provisioned = aws.provision(spec, &id, &Silent).await?;
//! println!("{}", provisioned.access.endpoint);
//! # Ok(()) }
//! ```

pub mod ecr;
mod eks;
mod iam;
pub mod kubeconfig;
mod load_balancers;
mod network;
mod preflight;
mod sdk;
mod teardown;
pub mod token;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_smithy_types::retry::RetryConfig;

pub use kubeconfig::{exec_credential_json, kubeconfig_yaml, write_kubeconfig};
pub use preflight::{CHECKIP_URL, QuotaCode, quota_code};
pub use sdk::{AwsClients, SdkOptions, default_retry_config, https_client, load_sdk_config};
// For every AWS caller under this module (the steps, `ecr`), so their errors read alike.
pub(crate) use sdk::{CallResult, error_code, sdk_error};
pub use token::{EksTokenSource, eks_token, presigned_url};

use crate::events::{Reporter, reported_step};
use crate::naming::{AwsNames, LabId};
use crate::provision::{
    ClusterAccess, ClusterProvisioner, Preflight, ProvisionStatus, Provisioned, ResourceRef,
    TagSearch, TeardownReport,
};
use crate::spec::ValidSpec;
use crate::wait::{self, Backoff, Check, Wait};
use crate::{Error, Result};

/// How long waits last and how often they poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitOptions {
    /// The first poll interval; each next one is half again as long, up to `max_poll`.
    pub initial_poll: Duration,
    /// The longest poll interval.
    pub max_poll: Duration,
    /// How long the EKS control plane may take to become ACTIVE (typically 8–12 minutes).
    pub cluster: Duration,
    /// How long the node group may take to become ACTIVE, or to scale (typically 2–5 minutes).
    pub node_group: Duration,
    /// How long a deletion (node group, cluster) may take.
    pub deletion: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            initial_poll: Duration::from_secs(5),
            max_poll: Duration::from_secs(30),
            cluster: Duration::from_secs(30 * 60),
            node_group: Duration::from_secs(25 * 60),
            deletion: Duration::from_secs(25 * 60),
        }
    }
}

impl WaitOptions {
    /// Waits for tests against an emulator: polls every few milliseconds, gives up after seconds.
    pub fn fast() -> Self {
        WaitOptions {
            initial_poll: Duration::from_millis(5),
            max_poll: Duration::from_millis(50),
            cluster: Duration::from_secs(20),
            node_group: Duration::from_secs(20),
            deletion: Duration::from_secs(20),
        }
    }
}

/// Options of the [`AwsProvisioner`].
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// Where and how the SDK talks to AWS (profile, endpoint override, credentials, retries).
    pub sdk: SdkOptions,
    /// Wait timeouts and poll intervals.
    pub waits: WaitOptions,
    /// A test hook: make `provision` fail with [`Error::Interrupted`] right after its n-th step
    /// (counted from 1 over [`ProvisionStep::ALL`]), as if the process had died there.
    pub stop_after_step: Option<usize>,
}

/// The steps of `provision`, in order; each one finds its resource before creating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProvisionStep {
    /// The VPC.
    Vpc,
    /// Two public subnets in two zones (EKS's control plane needs two).
    Subnets,
    /// The internet gateway.
    InternetGateway,
    /// The public route table.
    RouteTable,
    /// The security group of the control plane and the nodes.
    SecurityGroup,
    /// The role EKS's control plane assumes.
    ClusterRole,
    /// The role the GPU nodes assume.
    NodeRole,
    /// The EBS CSI driver's Pod Identity role.
    EbsCsiRole,
    /// In-cluster image builds' Pod Identity role.
    ImageBuildRole,
    /// The autostop agent's Pod Identity role.
    AutostopRole,
    /// The EKS cluster.
    Cluster,
    /// The caller's admin access entry.
    AdminAccess,
    /// The EKS Pod Identity agent addon.
    PodIdentityAgent,
    /// The EBS CSI driver addon, with its Pod Identity association.
    EbsCsiAddon,
    /// The image builds' Pod Identity association.
    ImageBuildAccess,
    /// The autostop agent's Pod Identity association.
    AutostopAccess,
    /// The GPU node group.
    NodeGroup,
}

impl ProvisionStep {
    /// Every step, in the order `provision` runs them.
    pub const ALL: [ProvisionStep; 17] = [
        ProvisionStep::Vpc,
        ProvisionStep::Subnets,
        ProvisionStep::InternetGateway,
        ProvisionStep::RouteTable,
        ProvisionStep::SecurityGroup,
        ProvisionStep::ClusterRole,
        ProvisionStep::NodeRole,
        ProvisionStep::EbsCsiRole,
        ProvisionStep::ImageBuildRole,
        ProvisionStep::AutostopRole,
        ProvisionStep::Cluster,
        ProvisionStep::AdminAccess,
        ProvisionStep::PodIdentityAgent,
        ProvisionStep::EbsCsiAddon,
        ProvisionStep::ImageBuildAccess,
        ProvisionStep::AutostopAccess,
        ProvisionStep::NodeGroup,
    ];

    /// The step as progress shows it, e.g. "create VPC".
    pub fn name(self) -> &'static str {
        match self {
            ProvisionStep::Vpc => "create VPC",
            ProvisionStep::Subnets => "create subnets",
            ProvisionStep::InternetGateway => "create internet gateway",
            ProvisionStep::RouteTable => "create route table",
            ProvisionStep::SecurityGroup => "create security group",
            ProvisionStep::ClusterRole => "create cluster IAM role",
            ProvisionStep::NodeRole => "create node IAM role",
            ProvisionStep::EbsCsiRole => "create EBS CSI driver IAM role",
            ProvisionStep::ImageBuildRole => "create image build IAM role",
            ProvisionStep::AutostopRole => "create autostop agent IAM role",
            ProvisionStep::Cluster => "create EKS cluster",
            ProvisionStep::AdminAccess => "grant cluster admin access",
            ProvisionStep::PodIdentityAgent => "install EKS Pod Identity agent addon",
            ProvisionStep::EbsCsiAddon => "install EBS CSI driver addon",
            ProvisionStep::ImageBuildAccess => "grant image builds ECR push access",
            ProvisionStep::AutostopAccess => "grant the autostop agent its node group access",
            ProvisionStep::NodeGroup => "create GPU node group",
        }
    }
}

/// The EKS provisioner. Its clients are built once, from one shared [`SdkConfig`], in the lab's region.
pub struct AwsProvisioner {
    clients: AwsClients,
    region: String,
    options: AwsOptions,
}

impl AwsProvisioner {
    /// A provisioner for `spec`'s region, loading the SDK configuration through aws-config's default
    /// chain (env, profiles, SSO, instance metadata) with `options.sdk` on top. Nothing is called yet:
    /// credentials resolve on the first request.
    pub async fn connect(spec: &ValidSpec, options: AwsOptions) -> Self {
        let config = load_sdk_config(&spec.spec.region, &options.sdk).await;
        Self::from_config(&config, options)
    }

    /// A provisioner over an existing SDK configuration (its region is the lab's).
    pub fn from_config(config: &SdkConfig, options: AwsOptions) -> Self {
        let clients = AwsClients::new(config, options.sdk.service_quotas_endpoint_url.as_deref());
        let region = config
            .region()
            .map(|r| r.as_ref().to_string())
            .unwrap_or_default();
        AwsProvisioner {
            clients,
            region,
            options,
        }
    }

    /// The clients, for callers that need one more AWS call (and tests).
    pub fn clients(&self) -> &AwsClients {
        &self.clients
    }

    /// The EKS token source of `spec`'s cluster, without any AWS call (what `gpulab token` prints
    /// through [`exec_credential_json`]).
    pub fn tokens(&self, spec: &ValidSpec) -> Result<Arc<EksTokenSource>> {
        self.check_region(spec)?;
        token_source(&self.clients, &AwsNames::new(&spec.spec).cluster)
    }

    /// The retry settings every client uses.
    pub fn retry_config(&self) -> Option<&RetryConfig> {
        self.clients.config.retry_config()
    }

    fn check_region(&self, spec: &ValidSpec) -> Result<()> {
        if spec.spec.region == self.region {
            Ok(())
        } else {
            Err(Error::Provision {
                step: "check region".into(),
                message: format!(
                    "this provisioner was built for {}, the lab is in {}",
                    self.region, spec.spec.region
                ),
                hint: Some("build the provisioner from the lab's spec".into()),
                cause: None,
            })
        }
    }

    fn context<'a>(
        &'a self,
        spec: &'a ValidSpec,
        id: &'a LabId,
        reporter: &'a dyn Reporter,
    ) -> Ctx<'a> {
        Ctx {
            c: &self.clients,
            spec,
            id,
            names: AwsNames::new(&spec.spec),
            reporter,
            waits: &self.options.waits,
        }
    }
}

/// What every step needs: the clients, the spec, the lab's ID, the names, the reporter.
pub(crate) struct Ctx<'a> {
    pub(crate) c: &'a AwsClients,
    pub(crate) spec: &'a ValidSpec,
    pub(crate) id: &'a LabId,
    pub(crate) names: AwsNames,
    pub(crate) reporter: &'a dyn Reporter,
    pub(crate) waits: &'a WaitOptions,
}

impl Ctx<'_> {
    pub(crate) fn lab(&self) -> &str {
        self.spec.name()
    }

    /// The tags of everything the lab creates.
    pub(crate) fn tags(&self) -> std::collections::BTreeMap<String, String> {
        crate::naming::aws_tags(&self.spec.spec, self.id)
    }

    /// Whether `tags` carry the lab's ID.
    pub(crate) fn owns<'t>(&self, tags: impl Iterator<Item = (&'t str, &'t str)>) -> bool {
        self.id.owns(tags)
    }

    /// Run `step`, reporting its start and end. The step returns its value and whether it found the
    /// work already done. Not an `async fn`: that would hold `work` inline until [`reported_step`]
    /// boxes it.
    pub(crate) fn step<'s, T, F>(
        &'s self,
        step: &'s str,
        work: F,
    ) -> impl Future<Output = Result<T>> + 's
    where
        F: Future<Output = Result<(T, bool)>> + 's,
        T: 's,
    {
        reported_step(self.reporter, step, work)
    }

    /// Poll `check` with backoff until it returns `None` (done), reporting what it waits on; after
    /// `timeout`, fail naming the last state seen.
    pub(crate) async fn wait<F, Fut>(
        &self,
        step: &str,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<String>>>,
    {
        let wait = Wait {
            step,
            what,
            timeout,
            backoff: Backoff {
                first: self.waits.initial_poll,
                max: self.waits.max_poll,
            },
        };
        wait::until(self.reporter, wait, || {
            let answer = check();
            async move {
                Ok(match answer.await? {
                    None => Check::Done(()),
                    Some(pending) => Check::Pending(pending),
                })
            }
        })
        .await
    }
}

/// What AWS has under one of the lab's names.
pub(crate) enum Found<T> {
    /// Nothing of that name.
    Absent,
    /// The lab's own: it carries the lab's ID.
    Ours(T),
    /// Someone else's: same name, not the lab's ID. Never adopted, changed or deleted.
    NotOurs,
}

/// Counts finished steps and stops after the configured one (the crash-and-resume test hook).
struct StepCounter {
    done: AtomicUsize,
    stop_after: Option<usize>,
}

impl StepCounter {
    /// A counter that never stops the run (for steps run a second time).
    fn unlimited() -> Self {
        StepCounter {
            done: AtomicUsize::new(0),
            stop_after: None,
        }
    }

    fn finished(&self) -> Result<()> {
        let n = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if self.stop_after == Some(n) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl ClusterProvisioner for AwsProvisioner {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn preflight(&self, spec: &ValidSpec, reporter: &dyn Reporter) -> Result<Preflight> {
        self.check_region(spec)?;
        let unassigned = LabId::unassigned();
        let ctx = self.context(spec, &unassigned, reporter);
        preflight::run(&ctx).await
    }

    async fn provision(
        &self,
        spec: &ValidSpec,
        id: &LabId,
        reporter: &dyn Reporter,
    ) -> Result<Provisioned> {
        self.check_region(spec)?;
        let ctx = self.context(spec, id, reporter);
        let counter = StepCounter {
            done: AtomicUsize::new(0),
            stop_after: self.options.stop_after_step,
        };
        let mut resources: Vec<ResourceRef> = Vec::new();
        let caller = preflight::caller_identity(&ctx).await?;
        let mut zones = preflight::zones(&ctx).await?;
        let api_cidrs = preflight::api_cidrs(&ctx, self.options.sdk.checkip_url.as_deref()).await?;

        let mut net = network::converge(&ctx, &zones, &counter, &mut resources).await?;
        let roles = iam::converge(&ctx, &counter, &mut resources).await?;
        let access = eks::Access {
            caller: &caller,
            api_cidrs: &api_cidrs,
        };
        eks::converge(
            &ctx,
            &mut net,
            &mut zones,
            &roles,
            &access,
            &counter,
            &mut resources,
        )
        .await?;

        let access = eks::access(&ctx).await?;
        Ok(Provisioned {
            access,
            resources,
            binding: None,
        })
    }

    async fn access(&self, spec: &ValidSpec, id: &LabId) -> Result<ClusterAccess> {
        self.check_region(spec)?;
        let silent = crate::events::Silent;
        let ctx = self.context(spec, id, &silent);
        eks::access(&ctx).await
    }

    async fn status(&self, spec: &ValidSpec, id: &LabId) -> Result<ProvisionStatus> {
        self.check_region(spec)?;
        let silent = crate::events::Silent;
        let ctx = self.context(spec, id, &silent);
        eks::status(&ctx).await
    }

    async fn scale(
        &self,
        spec: &ValidSpec,
        id: &LabId,
        desired: u32,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        self.check_region(spec)?;
        let ctx = self.context(spec, id, reporter);
        eks::scale(&ctx, desired).await
    }

    async fn teardown(
        &self,
        spec: &ValidSpec,
        id: &LabId,
        reporter: &dyn Reporter,
    ) -> Result<TeardownReport> {
        self.check_region(spec)?;
        let ctx = self.context(spec, id, reporter);
        teardown::run(&ctx).await
    }
}

/// Labs named as `spec`'s in its region, found by their tags and names (for `gpulab down --find-by-tag`
/// when the local state is lost): each lab ID with what carries it, and what has the lab's names without
/// any gpulab ID. Reads only.
pub async fn find_by_tag(spec: &ValidSpec, options: AwsOptions) -> Result<TagSearch> {
    let aws = AwsProvisioner::connect(spec, options).await;
    let unassigned = LabId::unassigned();
    let silent = crate::events::Silent;
    let ctx = aws.context(spec, &unassigned, &silent);
    teardown::find_by_tag(&ctx).await
}

/// The EKS token source of a lab, for callers that have a provisioner but no [`ClusterAccess`] yet.
pub fn token_source(clients: &AwsClients, cluster: &str) -> Result<Arc<EksTokenSource>> {
    let credentials = clients
        .config
        .credentials_provider()
        .ok_or_else(|| Error::Credentials {
            message: "no AWS credentials provider is configured".into(),
            hint: "set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run `aws configure`".into(),
        })?;
    let region = clients
        .config
        .region()
        .map(|r| r.as_ref().to_string())
        .unwrap_or_default();
    Ok(Arc::new(EksTokenSource::new(credentials, &region, cluster)))
}

/// EC2 filter `name` = any of `values`.
pub(crate) fn filter(name: &str, values: &[&str]) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// The EC2 filter that selects lab `id`'s resources.
pub(crate) fn lab_filter(id: &LabId) -> aws_sdk_ec2::types::Filter {
    filter(
        &format!("tag:{}", crate::naming::LAB_ID_KEY),
        &[id.as_str()],
    )
}
