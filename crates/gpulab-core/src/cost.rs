//! What a lab costs: itemised per hour and per month, from the catalog's prices. The plan shows it before
//! anything exists; status shows the burn rate and what was spent since `up`.

use serde::Serialize;

use crate::catalog::HOURS_PER_MONTH;
use crate::spec::{AccessMode, Capacity, ValidSpec};

/// One line of the bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostItem {
    /// What is billed, e.g. "GPU nodes (g4dn.xlarge)".
    pub item: String,
    /// How many, in the item's unit, e.g. "1 × $0.526/h".
    pub quantity: String,
    /// USD per hour; `None` where the catalog has no price for the region.
    pub per_hour: Option<f64>,
    /// Whether it stops when the node group is scaled to zero.
    pub stops_with_nodes: bool,
}

/// The lab's cost, itemised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostEstimate {
    /// The lines of the bill.
    pub items: Vec<CostItem>,
    /// Sum of the known items, USD per hour.
    pub per_hour: f64,
    /// The same per month (730 hours).
    pub per_month: f64,
    /// What remains per hour with the GPU nodes scaled to zero (control plane, volumes).
    pub idle_per_hour: f64,
    /// False when some item has no price, so the totals are a lower bound.
    pub complete: bool,
    /// What the estimate leaves out.
    pub notes: Vec<String>,
}

impl CostEstimate {
    /// The cost of `spec`'s lab with its desired node count.
    pub fn for_spec(spec: &ValidSpec) -> Self {
        let s = &spec.spec;
        let nodes = s.nodes.desired;
        let services = spec.region.services;
        let mut notes = vec![
            "Data transfer, load-balancer capacity units and EBS snapshots are not included."
                .to_string(),
        ];

        let node_price = spec.instance.price_per_hour(&s.region);
        let mut items = vec![CostItem {
            item: format!("GPU nodes ({}, {})", spec.instance.name, s.nodes.capacity),
            quantity: match node_price {
                Some(p) => format!("{nodes} × ${p:.4}/h"),
                None => format!("{nodes} × (no price for {})", s.region),
            },
            per_hour: node_price.map(|p| p * f64::from(nodes)),
            stops_with_nodes: true,
        }];
        if s.nodes.capacity == Capacity::Spot {
            notes.push("Spot nodes are costed at the on-demand price, an upper bound; spot usually costs 60-70% less.".into());
        }

        let per_gib_hour = services.map(|p| p.ebs_gp3_per_gb_month / HOURS_PER_MONTH);
        let volume_gib = spec.volume_size.as_gib().ceil();
        let disks_gib = f64::from(nodes * s.nodes.disk_gib);
        items.push(CostItem {
            item: "EKS control plane".into(),
            quantity: "1 cluster".into(),
            per_hour: services.map(|p| p.eks_control_plane_per_hour),
            stops_with_nodes: false,
        });
        items.push(CostItem {
            item: "Node root disks (EBS gp3)".into(),
            quantity: format!("{nodes} × {} GiB", s.nodes.disk_gib),
            per_hour: per_gib_hour.map(|p| p * disks_gib),
            stops_with_nodes: true,
        });
        items.push(CostItem {
            item: "/workspace volume (EBS gp3)".into(),
            quantity: format!("{volume_gib} GiB"),
            per_hour: per_gib_hour.map(|p| p * volume_gib),
            stops_with_nodes: false,
        });
        items.push(CostItem {
            item: "Public IPv4 addresses of the nodes".into(),
            quantity: format!(
                "{nodes} × ${:.3}/h",
                services.map_or(0.0, |p| p.public_ipv4_per_hour)
            ),
            per_hour: services.map(|p| p.public_ipv4_per_hour * f64::from(nodes)),
            stops_with_nodes: true,
        });
        if s.access.mode == AccessMode::LoadBalancer {
            items.push(CostItem {
                item: "Network Load Balancer".into(),
                quantity: "1".into(),
                per_hour: services.map(|p| p.nlb_per_hour),
                stops_with_nodes: false,
            });
        }
        if services.is_none() {
            notes.push(format!(
                "gpulab's catalog has no service prices for {}: only the GPU nodes are costed.",
                s.region
            ));
        }

        let sum = |filter: &dyn Fn(&CostItem) -> bool| {
            items
                .iter()
                .filter(|i| filter(i))
                .filter_map(|i| i.per_hour)
                .sum::<f64>()
        };
        let per_hour = sum(&|_| true);
        let idle_per_hour = sum(&|i| !i.stops_with_nodes);
        let complete = items.iter().all(|i| i.per_hour.is_some());
        CostEstimate {
            per_month: per_hour * HOURS_PER_MONTH,
            per_hour,
            idle_per_hour,
            complete,
            items,
            notes,
        }
    }
}
