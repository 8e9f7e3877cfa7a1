//! AWS regions gpulab knows, and the prices of the services a lab uses besides its GPU nodes.

use serde::Serialize;

/// An AWS region in the commercial partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Region {
    /// Region code, e.g. "us-west-2".
    pub code: &'static str,
    /// Where it is, e.g. "US West (Oregon)".
    pub location: &'static str,
    /// Prices of the non-GPU services a lab uses, where the catalog has them for this region.
    pub services: Option<ServicePrices>,
}

/// Hourly and monthly prices of the services around the GPU nodes, USD. Per-request and data-transfer
/// charges are not modelled: a learner's lab moves little data, and the plan says so.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServicePrices {
    /// EKS control plane per hour, in standard support. Extended support costs six times as much, which
    /// is why gpulab never pins an old Kubernetes version by default.
    pub eks_control_plane_per_hour: f64,
    /// EBS gp3 storage per GB-month (volumes for `/workspace` and node root disks).
    pub ebs_gp3_per_gb_month: f64,
    /// A Network Load Balancer per hour, before capacity units (only when the LoadBalancer access mode is chosen).
    pub nlb_per_hour: f64,
    /// One public IPv4 address per hour; each node in a public subnet holds one.
    pub public_ipv4_per_hour: f64,
}

/// When the service prices were read, and from where.
pub const SERVICE_PRICES_AS_OF: &str =
    "2025-06, from the AWS pricing pages for EKS, EBS, ELB and VPC (public IPv4)";

const fn services(ebs_gp3_per_gb_month: f64, nlb_per_hour: f64) -> Option<ServicePrices> {
    Some(ServicePrices {
        eks_control_plane_per_hour: 0.10,
        ebs_gp3_per_gb_month,
        nlb_per_hour,
        public_ipv4_per_hour: 0.005,
    })
}

const REGIONS: &[Region] = &[
    Region {
        code: "us-east-1",
        location: "US East (N. Virginia)",
        services: services(0.08, 0.0225),
    },
    Region {
        code: "us-east-2",
        location: "US East (Ohio)",
        services: services(0.08, 0.0225),
    },
    Region {
        code: "us-west-1",
        location: "US West (N. California)",
        services: None,
    },
    Region {
        code: "us-west-2",
        location: "US West (Oregon)",
        services: services(0.08, 0.0225),
    },
    Region {
        code: "af-south-1",
        location: "Africa (Cape Town)",
        services: None,
    },
    Region {
        code: "ap-east-1",
        location: "Asia Pacific (Hong Kong)",
        services: None,
    },
    Region {
        code: "ap-east-2",
        location: "Asia Pacific (Taipei)",
        services: None,
    },
    Region {
        code: "ap-south-1",
        location: "Asia Pacific (Mumbai)",
        services: None,
    },
    Region {
        code: "ap-south-2",
        location: "Asia Pacific (Hyderabad)",
        services: None,
    },
    Region {
        code: "ap-southeast-1",
        location: "Asia Pacific (Singapore)",
        services: None,
    },
    Region {
        code: "ap-southeast-2",
        location: "Asia Pacific (Sydney)",
        services: None,
    },
    Region {
        code: "ap-southeast-3",
        location: "Asia Pacific (Jakarta)",
        services: None,
    },
    Region {
        code: "ap-southeast-4",
        location: "Asia Pacific (Melbourne)",
        services: None,
    },
    Region {
        code: "ap-southeast-5",
        location: "Asia Pacific (Malaysia)",
        services: None,
    },
    Region {
        code: "ap-southeast-7",
        location: "Asia Pacific (Thailand)",
        services: None,
    },
    Region {
        code: "ap-northeast-1",
        location: "Asia Pacific (Tokyo)",
        services: None,
    },
    Region {
        code: "ap-northeast-2",
        location: "Asia Pacific (Seoul)",
        services: None,
    },
    Region {
        code: "ap-northeast-3",
        location: "Asia Pacific (Osaka)",
        services: None,
    },
    Region {
        code: "ca-central-1",
        location: "Canada (Central)",
        services: None,
    },
    Region {
        code: "ca-west-1",
        location: "Canada West (Calgary)",
        services: None,
    },
    Region {
        code: "eu-central-1",
        location: "Europe (Frankfurt)",
        services: None,
    },
    Region {
        code: "eu-central-2",
        location: "Europe (Zurich)",
        services: None,
    },
    Region {
        code: "eu-west-1",
        location: "Europe (Ireland)",
        services: services(0.088, 0.0252),
    },
    Region {
        code: "eu-west-2",
        location: "Europe (London)",
        services: None,
    },
    Region {
        code: "eu-west-3",
        location: "Europe (Paris)",
        services: None,
    },
    Region {
        code: "eu-south-1",
        location: "Europe (Milan)",
        services: None,
    },
    Region {
        code: "eu-south-2",
        location: "Europe (Spain)",
        services: None,
    },
    Region {
        code: "eu-north-1",
        location: "Europe (Stockholm)",
        services: None,
    },
    Region {
        code: "il-central-1",
        location: "Israel (Tel Aviv)",
        services: None,
    },
    Region {
        code: "me-south-1",
        location: "Middle East (Bahrain)",
        services: None,
    },
    Region {
        code: "me-central-1",
        location: "Middle East (UAE)",
        services: None,
    },
    Region {
        code: "mx-central-1",
        location: "Mexico (Central)",
        services: None,
    },
    Region {
        code: "sa-east-1",
        location: "South America (São Paulo)",
        services: None,
    },
];

/// All regions gpulab accepts.
pub fn regions() -> &'static [Region] {
    REGIONS
}

/// The region with code `code`, if gpulab knows it.
pub fn region(code: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.code == code)
}
