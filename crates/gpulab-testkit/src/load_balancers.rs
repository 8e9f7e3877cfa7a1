//! The load balancers an EKS cluster's cloud provider makes for LoadBalancer Services, kept in moto's
//! ELBv2. Modelled on the AWS cloud provider's service controller (kubernetes/cloud-provider-aws,
//! `pkg/providers/v1/aws_loadbalancer.go`, the in-tree `nlb` path EKS runs when the AWS Load Balancer
//! Controller is not installed):
//! - `service.beta.kubernetes.io/aws-load-balancer-type: nlb` makes a network load balancer, internet
//!   facing, in the cluster's subnets, with a target group and a TCP listener per Service port;
//! - the load balancer and target groups are tagged `kubernetes.io/cluster/<cluster>=owned`,
//!   `kubernetes.io/service-name=<ns>/<name>`, plus the Service's
//!   `service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags` (`k1=v1,k2=v2`);
//! - the controller deletes them before it lets the Service go (its finalizer, see the emulator's
//!   service controller); once the control plane is deleted nothing deletes them any more, which is
//!   how a real lab strands a load balancer (and the ENIs that keep its VPC alive).

use std::net::SocketAddr;
use std::sync::Mutex;

use serde_json::Value;

use crate::kube::LoadBalancerCloud;
use crate::moto::query;

const ADDITIONAL_TAGS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags";
const VERSION: &str = "2015-12-01";

/// The cluster whose control plane runs the service controller.
#[derive(Debug, Clone)]
struct Cluster {
    name: String,
    subnets: Vec<String>,
}

/// NLBs in moto for the emulated cluster's LoadBalancer Services.
pub struct EmulatedLoadBalancers {
    moto: SocketAddr,
    cluster: Mutex<Option<Cluster>>,
}

impl EmulatedLoadBalancers {
    /// No cluster yet.
    pub fn new(moto: SocketAddr) -> Self {
        EmulatedLoadBalancers {
            moto,
            cluster: Mutex::new(None),
        }
    }

    /// The control plane of `name` came, in `subnets`.
    pub fn cluster_created(&self, name: &str, subnets: Vec<String>) {
        *self.cluster.lock().expect("lb lock") = Some(Cluster {
            name: name.to_string(),
            subnets,
        });
    }

    /// The control plane went: its service controller deletes nothing any more.
    pub fn cluster_deleted(&self, name: &str) {
        let mut cluster = self.cluster.lock().expect("lb lock");
        if cluster.as_ref().is_some_and(|c| c.name == name) {
            *cluster = None;
        }
    }

    /// The load balancers in moto, as (name, tags).
    pub fn load_balancers(&self) -> Vec<(String, Vec<(String, String)>)> {
        let xml = self.call(&[("Action", "DescribeLoadBalancers")]);
        fields(&xml, "LoadBalancerArn")
            .into_iter()
            .zip(fields(&xml, "LoadBalancerName"))
            .map(|(arn, name)| {
                let tags =
                    self.call(&[("Action", "DescribeTags"), ("ResourceArns.member.1", &arn)]);
                let pairs = fields(&tags, "Key")
                    .into_iter()
                    .zip(fields(&tags, "Value"))
                    .collect();
                (name, pairs)
            })
            .collect()
    }

    fn call(&self, params: &[(&str, &str)]) -> String {
        let mut all = vec![("Version", VERSION)];
        all.extend_from_slice(params);
        query(self.moto, "elasticloadbalancing", &all).unwrap_or_default()
    }

    fn vpc_of(&self, subnet: &str) -> Option<String> {
        let xml = query(
            self.moto,
            "ec2",
            &[
                ("Action", "DescribeSubnets"),
                ("Version", "2016-11-15"),
                ("SubnetId.1", subnet),
            ],
        )
        .ok()?;
        fields(&xml, "vpcId").into_iter().next()
    }
}

/// Names from the Service's uid, as the controller derives them (an `a` and the uid without dashes,
/// cut to ELB's 32 characters).
fn names(service: &Value) -> (String, String) {
    let uid: String = service["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(|c| *c != '-')
        .collect();
    let lb = format!("a{uid}").chars().take(32).collect();
    let tg = format!("k8s-{uid}").chars().take(32).collect();
    (lb, tg)
}

fn fields(xml: &str, tag: &str) -> Vec<String> {
    xml.split(&format!("<{tag}>"))
        .skip(1)
        .filter_map(|rest| {
            rest.split_once(&format!("</{tag}>"))
                .map(|(v, _)| v.to_string())
        })
        .collect()
}

impl LoadBalancerCloud for EmulatedLoadBalancers {
    fn ensure(&self, service: &Value) -> String {
        let Some(cluster) = self.cluster.lock().expect("lb lock").clone() else {
            return String::new();
        };
        let (lb_name, tg_name) = names(service);
        let existing = self.call(&[
            ("Action", "DescribeLoadBalancers"),
            ("Names.member.1", &lb_name),
        ]);
        if let Some(dns) = fields(&existing, "DNSName").into_iter().next() {
            return dns;
        }
        let namespace = service["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let name = service["metadata"]["name"].as_str().unwrap_or_default();
        let mut tags = vec![
            (
                format!("kubernetes.io/cluster/{}", cluster.name),
                "owned".to_string(),
            ),
            (
                "kubernetes.io/service-name".to_string(),
                format!("{namespace}/{name}"),
            ),
        ];
        if let Some(extra) = service["metadata"]["annotations"][ADDITIONAL_TAGS].as_str() {
            tags.extend(extra.split(',').filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            }));
        }
        let tag_params: Vec<(String, String)> = tags
            .iter()
            .enumerate()
            .flat_map(|(i, (k, v))| {
                [
                    (format!("Tags.member.{}.Key", i + 1), k.clone()),
                    (format!("Tags.member.{}.Value", i + 1), v.clone()),
                ]
            })
            .collect();
        let subnet_params: Vec<(String, String)> = cluster
            .subnets
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("Subnets.member.{}", i + 1), s.clone()))
            .collect();
        let mut params: Vec<(&str, &str)> = vec![
            ("Action", "CreateLoadBalancer"),
            ("Name", &lb_name),
            ("Type", "network"),
            ("Scheme", "internet-facing"),
        ];
        params.extend(subnet_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        params.extend(tag_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let created = self.call(&params);
        let lb_arn = fields(&created, "LoadBalancerArn").into_iter().next();
        let dns = fields(&created, "DNSName")
            .into_iter()
            .next()
            .unwrap_or_default();

        // A target group and a listener for the Service's first port.
        let port = service["spec"]["ports"][0]["port"]
            .as_u64()
            .unwrap_or(22)
            .to_string();
        if let (Some(lb_arn), Some(vpc)) =
            (lb_arn, cluster.subnets.first().and_then(|s| self.vpc_of(s)))
        {
            let mut params: Vec<(&str, &str)> = vec![
                ("Action", "CreateTargetGroup"),
                ("Name", &tg_name),
                ("Protocol", "TCP"),
                ("Port", &port),
                ("VpcId", &vpc),
                ("TargetType", "instance"),
            ];
            params.extend(tag_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let group = self.call(&params);
            if let Some(tg_arn) = fields(&group, "TargetGroupArn").into_iter().next() {
                self.call(&[
                    ("Action", "CreateListener"),
                    ("LoadBalancerArn", &lb_arn),
                    ("Protocol", "TCP"),
                    ("Port", &port),
                    ("DefaultActions.member.1.Type", "forward"),
                    ("DefaultActions.member.1.TargetGroupArn", &tg_arn),
                ]);
            }
        }
        dns
    }

    fn delete(&self, service: &Value) {
        if self.cluster.lock().expect("lb lock").is_none() {
            return;
        }
        let (lb_name, tg_name) = names(service);
        let found = self.call(&[
            ("Action", "DescribeLoadBalancers"),
            ("Names.member.1", &lb_name),
        ]);
        if let Some(arn) = fields(&found, "LoadBalancerArn").into_iter().next() {
            self.call(&[("Action", "DeleteLoadBalancer"), ("LoadBalancerArn", &arn)]);
        }
        let groups = self.call(&[
            ("Action", "DescribeTargetGroups"),
            ("Names.member.1", &tg_name),
        ]);
        if let Some(arn) = fields(&groups, "TargetGroupArn").into_iter().next() {
            self.call(&[("Action", "DeleteTargetGroup"), ("TargetGroupArn", &arn)]);
        }
    }
}
