//! Preflight: who the caller is, which zones offer the node type, and whether the GPU vCPU quota covers
//! the node group at its largest. Creates nothing.

use aws_sdk_ec2::types::LocationType;
use serde::Serialize;

use super::sdk::{CallResult, error_code, sdk_error};
use super::{Ctx, filter};
use crate::catalog::QuotaClass;
use crate::events::Event;
use crate::provision::{Preflight, QuotaCheck};
use crate::spec::Capacity;
use crate::{Error, Result};

/// A Service Quotas code of EC2's GPU vCPU quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuotaCode {
    /// The code, e.g. "L-DB2E81BA".
    pub code: &'static str,
    /// The quota's name in the console.
    pub name: &'static str,
}

/// The quota an instance of `class` bought as `capacity` counts against.
pub fn quota_code(class: QuotaClass, capacity: Capacity) -> QuotaCode {
    let (code, name) = match (class, capacity) {
        (QuotaClass::GAndVt, Capacity::OnDemand) => {
            ("L-DB2E81BA", "Running On-Demand G and VT instances")
        }
        (QuotaClass::P, Capacity::OnDemand) => ("L-417A185B", "Running On-Demand P instances"),
        (QuotaClass::GAndVt, Capacity::Spot) => {
            ("L-3819A6DF", "All G and VT Spot Instance Requests")
        }
        (QuotaClass::P, Capacity::Spot) => ("L-7212CCBC", "All P Spot Instance Requests"),
    };
    QuotaCode { code, name }
}

/// The caller's identity: its ARN (STS GetCallerIdentity).
pub(crate) async fn caller_identity(ctx: &Ctx<'_>) -> Result<String> {
    let out = ctx
        .c
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| match sdk_error("check AWS credentials", e) {
            Error::Provision { message, .. } => Error::Credentials {
                message: format!("sts GetCallerIdentity failed: {message}"),
                hint: "check AWS_PROFILE / AWS_ACCESS_KEY_ID, or run `aws sso login` for an SSO profile"
                    .into(),
            },
            other => other,
        })?;
    Ok(out.arn().unwrap_or_default().to_string())
}

/// The zones a lab may put its subnets in: the region's standard availability zones (Local Zones and
/// Wavelength Zones left out: EKS's control plane cannot use them, and they sort first by name, e.g.
/// `us-west-2-lax-1a`), split by whether they offer the node type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Zones {
    /// Zones offering the node type, sorted: the node group's subnet goes in the first.
    pub(crate) offering: Vec<String>,
    /// The other zones, sorted: enough for the control plane's second subnet.
    pub(crate) other: Vec<String>,
}

impl Zones {
    /// Every zone, those offering the node type first.
    pub(crate) fn all(&self) -> impl Iterator<Item = &String> {
        self.offering.iter().chain(&self.other)
    }

    /// Keep only the zones in `valid` (those EKS named when it refused one).
    pub(crate) fn keep_only(&mut self, valid: &[String]) {
        self.offering.retain(|z| valid.contains(z));
        self.other.retain(|z| valid.contains(z));
    }

    /// Enough for a lab: a zone for the nodes, and two zones in all.
    fn check(&self, instance: &str, region: &str, step: &str) -> Result<()> {
        if !self.offering.is_empty() && self.offering.len() + self.other.len() >= 2 {
            return Ok(());
        }
        let message = if self.offering.is_empty() {
            format!(
                "{instance} is not offered in any availability zone of {region} that the lab can use"
            )
        } else {
            format!(
                "{region} has only one availability zone the lab can use ({}); EKS needs subnets in two",
                self.offering.join(", ")
            )
        };
        Err(Error::Provision {
            step: step.into(),
            message,
            hint: Some(format!(
                "choose another region or node type: `gpulab catalog --region <region>` lists what is offered; `aws ec2 describe-instance-type-offerings --location-type availability-zone --filters Name=instance-type,Values={instance} --region {region}` checks one"
            )),
            cause: None,
        })
    }
}

/// The region's standard availability zones that are available, and which of them offer the node type
/// (DescribeAvailabilityZones with `zone-type=availability-zone`, DescribeInstanceTypeOfferings).
pub(crate) async fn zones(ctx: &Ctx<'_>) -> Result<Zones> {
    let instance = ctx.spec.instance.name;
    let step = "check instance type offerings";
    let out = ctx
        .c
        .ec2
        .describe_availability_zones()
        .filters(filter("zone-type", &["availability-zone"]))
        .filters(filter("state", &["available"]))
        .send()
        .await
        .at(step)?;
    // The filter is the API's; the check on each zone keeps a Local Zone out should a filter be ignored.
    let mut standard: Vec<String> = out
        .availability_zones()
        .iter()
        .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
        .filter_map(|z| z.zone_name().map(str::to_owned))
        .collect();
    standard.sort();
    standard.dedup();

    let mut offered = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let out = ctx
            .c
            .ec2
            .describe_instance_type_offerings()
            .location_type(LocationType::AvailabilityZone)
            .filters(filter("instance-type", &[instance]))
            .set_next_token(next.take())
            .send()
            .await
            .at(step)?;
        offered.extend(
            out.instance_type_offerings()
                .iter()
                .filter_map(|o| o.location().map(str::to_owned)),
        );
        match out.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_owned()),
            _ => break,
        }
    }
    let (offering, other) = standard.into_iter().partition(|z| offered.contains(z));
    let zones = Zones { offering, other };
    zones.check(instance, &ctx.spec.spec.region, step)?;
    Ok(zones)
}

/// The quota check: `Ok(Some)` with the numbers, `Ok(None)` when the quota could not be read (a
/// warning is reported), or an error when the quota does not cover `nodes.desired`, the nodes `up`
/// starts. When it covers those but not `nodes.max`, a warning says how far the group can scale.
pub(crate) async fn quota(ctx: &Ctx<'_>) -> Result<Option<QuotaCheck>> {
    let spec = &ctx.spec.spec;
    let code = quota_code(ctx.spec.instance.quota_class(), spec.nodes.capacity);
    let vcpus = f64::from(ctx.spec.instance.vcpus);
    let needed = vcpus * f64::from(spec.nodes.desired);
    let at_max = vcpus * f64::from(spec.nodes.max);
    let step = "check GPU vCPU quota";
    let (limit, name) = match read_quota(ctx, code).await {
        Ok(read) => read,
        Err(why) => return unreadable(ctx, code, &why),
    };
    let check = QuotaCheck {
        quota_name: name.unwrap_or_else(|| code.name.to_string()),
        quota_code: code.code.to_string(),
        limit_vcpus: limit,
        needed_vcpus: needed,
        max_vcpus: at_max,
    };
    let region = &spec.region;
    let instance = ctx.spec.instance;
    let request = format!(
        "request more with `aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {} --desired-value {at_max} --region {region}` (enough for nodes.max), or at https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{} ; increases for GPU quotas can take a day",
        code.code, code.code
    );
    if limit < needed {
        return Err(Error::Provision {
            step: step.into(),
            message: format!(
                "the quota \"{}\" ({}) allows {limit} vCPUs in {region}; {} × {} ({} vCPUs each, nodes.desired = {}) needs {needed}",
                check.quota_name,
                code.code,
                spec.nodes.desired,
                instance.name,
                instance.vcpus,
                spec.nodes.desired,
            ),
            hint: Some(format!("{request}. Or lower nodes.desired.")),
            cause: None,
        });
    }
    if limit < at_max {
        // Whole nodes the quota allows: EC2 refuses the node group's launches beyond them.
        let nodes = (limit / vcpus).floor() as u64;
        ctx.reporter.report(Event::Warning {
            message: format!(
                "the quota \"{}\" ({}) allows {limit} vCPUs in {region}: enough for nodes.desired = {} ({needed} vCPUs), but not for nodes.max = {} ({at_max}); scaling beyond {nodes} node{} of {} will be refused by EC2. To scale further, {request}",
                check.quota_name,
                code.code,
                spec.nodes.desired,
                spec.nodes.max,
                if nodes == 1 { "" } else { "s" },
                instance.name,
            ),
        });
    }
    Ok(Some(check))
}

/// The account's value of quota `code` (the applied one, else AWS's default) and the quota's name; or
/// why it could not be read.
pub(crate) async fn read_quota(
    ctx: &Ctx<'_>,
    code: QuotaCode,
) -> std::result::Result<(f64, Option<String>), String> {
    let step = "check GPU vCPU quota";
    let applied = ctx
        .c
        .quotas
        .get_service_quota()
        .service_code("ec2")
        .quota_code(code.code)
        .send()
        .await;
    let quota = match applied {
        Ok(out) => out.quota().cloned(),
        Err(e) if error_code(&e) == Some("NoSuchResourceException") => {
            // No applied value: the account has the default.
            ctx.c
                .quotas
                .get_aws_default_service_quota()
                .service_code("ec2")
                .quota_code(code.code)
                .send()
                .await
                .map_err(|e| sdk_error(step, e).to_string())?
                .quota()
                .cloned()
        }
        Err(e) => return Err(sdk_error(step, e).to_string()),
    };
    let name = quota
        .as_ref()
        .and_then(|q| q.quota_name())
        .map(str::to_owned);
    match quota.and_then(|q| q.value()) {
        Some(limit) => Ok((limit, name)),
        None => Err("the quota has no value".into()),
    }
}

fn unreadable(ctx: &Ctx<'_>, code: QuotaCode, why: &str) -> Result<Option<QuotaCheck>> {
    ctx.reporter.report(Event::Warning {
        message: format!(
            "could not read the quota \"{}\" ({}): {why}; `up` continues, and EC2 refuses the nodes if it is short",
            code.name, code.code
        ),
    });
    Ok(None)
}

/// AWS's "what is my address" service: it answers with the public IPv4 address a request came from,
/// the one the EKS endpoint will see.
pub const CHECKIP_URL: &str = "https://checkip.amazonaws.com";

/// The public IPv4 address this machine reaches AWS from, asked of `url` ([`CHECKIP_URL`] unless
/// overridden): the address the cluster's API endpoint admits when `access.api_cidrs` is empty.
pub(crate) async fn caller_address(url: &str) -> Result<std::net::Ipv4Addr> {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let step = "find this machine's public address";
    let fail = |message: String| {
        Error::Provision {
        step: step.into(),
        message,
        hint: Some(
            "set access.api_cidrs (--api-cidr) to the address range you reach AWS from, e.g. 203.0.113.7/32".into(),
        ),
        cause: None,
    }
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| fail(format!("load the system's CA certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(https);
    let uri: http::Uri = url
        .parse()
        .map_err(|e| fail(format!("{url} is not a URL: {e}")))?;
    let ask = async {
        let response = client
            .get(uri)
            .await
            .map_err(|e| fail(format!("ask {url}: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(format!("read {url}'s answer: {e}")))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        if !status.is_success() {
            return Err(fail(format!("{url} answered HTTP {status}")));
        }
        text.parse()
            .map_err(|_| fail(format!("{url} answered {text:?}, not an IPv4 address")))
    };
    tokio::time::timeout(std::time::Duration::from_secs(15), ask)
        .await
        .map_err(|_| fail(format!("{url} did not answer within 15 s")))?
}

/// The IPv4 ranges the cluster's public API endpoint admits: `access.api_cidrs`, else this machine's
/// public address (a /32).
pub(crate) async fn api_cidrs(ctx: &Ctx<'_>, checkip_url: Option<&str>) -> Result<Vec<String>> {
    let explicit = &ctx.spec.access().api_cidrs;
    if !explicit.is_empty() {
        return Ok(explicit.iter().map(|n| n.trunc().to_string()).collect());
    }
    let address = caller_address(checkip_url.unwrap_or(CHECKIP_URL)).await?;
    Ok(vec![format!("{address}/32")])
}

/// The whole preflight.
pub(crate) async fn run(ctx: &Ctx<'_>) -> Result<Preflight> {
    let identity = caller_identity(ctx).await?;
    let zones = zones(ctx).await?.offering;
    let warnings = std::sync::Mutex::new(Vec::new());
    let capture = |event: Event| {
        if let Event::Warning { message } = &event {
            warnings.lock().expect("warnings").push(message.clone());
        }
        ctx.reporter.report(event);
    };
    let inner = Ctx {
        c: ctx.c,
        spec: ctx.spec,
        id: ctx.id,
        names: ctx.names.clone(),
        reporter: &capture,
        waits: ctx.waits,
    };
    let quota = quota(&inner).await?;
    let warnings = warnings.into_inner().expect("warnings");
    Ok(Preflight {
        identity,
        zones,
        quota,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_codes() {
        assert_eq!(
            quota_code(QuotaClass::GAndVt, Capacity::OnDemand).code,
            "L-DB2E81BA"
        );
        assert_eq!(
            quota_code(QuotaClass::P, Capacity::OnDemand).code,
            "L-417A185B"
        );
        assert_eq!(
            quota_code(QuotaClass::GAndVt, Capacity::Spot).code,
            "L-3819A6DF"
        );
        assert_eq!(quota_code(QuotaClass::P, Capacity::Spot).code, "L-7212CCBC");
    }
}
