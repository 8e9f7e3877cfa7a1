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
    /// A lab on a cluster gpulab did not create: its nodes, control plane and volumes are billed to the
    /// cluster's owner at prices gpulab cannot know, so nothing is priced.
    pub fn existing_cluster() -> Self {
        CostEstimate {
            items: Vec::new(),
            per_hour: 0.0,
            per_month: 0.0,
            idle_per_hour: 0.0,
            complete: false,
            notes: vec![
                "An existing cluster: its nodes, control plane and volumes are its owner's bill; gpulab created none of them and cannot price them."
                    .to_string(),
            ],
        }
    }

    /// Whether anything is priced: false for a cluster gpulab did not create
    /// ([`CostEstimate::existing_cluster`]).
    pub fn is_priced(&self) -> bool {
        !self.items.is_empty()
    }

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
            notes.push(format!("Spot nodes are costed at {}'s on-demand price; spot usually costs 60-70% less (a node may be one of the larger types with the same GPU that the node group also takes).", spec.instance.name));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AccessLayer, NodesLayer, SpecInputs, SpecLayer, ValidSpec};

    fn spec(layer: SpecLayer) -> ValidSpec {
        let home = tempfile::tempdir().unwrap();
        SpecInputs {
            overrides: layer,
            home: Some(home.path().into()),
            ..Default::default()
        }
        .resolve()
        .unwrap()
        .validate()
        .unwrap()
    }

    fn item<'a>(cost: &'a CostEstimate, prefix: &str) -> &'a CostItem {
        cost.items
            .iter()
            .find(|i| i.item.starts_with(prefix))
            .unwrap_or_else(|| panic!("no item {prefix}"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn the_default_lab_costs_what_the_original_scripts_said() {
        let cost = CostEstimate::for_spec(&spec(SpecLayer::default()));
        // g4dn.xlarge $0.526 + EKS $0.10 + 150 GiB gp3 ($0.08/GB-month) + one public IPv4 $0.005.
        let expected = 0.526 + 0.10 + 150.0 * 0.08 / 730.0 + 0.005;
        assert!(close(cost.per_hour, expected), "{}", cost.per_hour);
        assert!(close(cost.per_month, expected * 730.0));
        assert!(cost.complete);
        // The original README: "~$0.65/hour (~$470/month)".
        assert!((0.64..0.66).contains(&cost.per_hour) && (465.0..480.0).contains(&cost.per_month));
        assert!(close(cost.idle_per_hour, 0.10 + 50.0 * 0.08 / 730.0));
    }

    #[test]
    fn node_items_scale_with_the_node_count() {
        let layer = SpecLayer {
            nodes: NodesLayer {
                instance_type: Some("g5.xlarge".into()),
                desired: Some(2),
                ..Default::default()
            },
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        let cost = CostEstimate::for_spec(&spec(layer));
        assert!(close(
            item(&cost, "GPU nodes").per_hour.unwrap(),
            2.0 * 1.006
        ));
        assert!(close(
            item(&cost, "Node root disks").per_hour.unwrap(),
            200.0 * 0.08 / 730.0
        ));
        assert!(close(item(&cost, "Public IPv4").per_hour.unwrap(), 0.01));
    }

    #[test]
    fn spot_and_load_balancers_are_itemised() {
        let layer = SpecLayer {
            nodes: NodesLayer {
                capacity: Some(crate::spec::Capacity::Spot),
                ..Default::default()
            },
            access: AccessLayer {
                mode: Some(AccessMode::LoadBalancer),
                allowed_cidrs: Some(vec!["203.0.113.7/32".parse().unwrap()]),
                api_cidrs: None,
            },
            ..Default::default()
        };
        let cost = CostEstimate::for_spec(&spec(layer));
        assert!(close(
            item(&cost, "Network Load Balancer").per_hour.unwrap(),
            0.0225
        ));
        assert!(cost.notes.iter().any(|n| n.contains("Spot")));
        assert!(close(
            cost.idle_per_hour,
            0.10 + 50.0 * 0.08 / 730.0 + 0.0225
        ));
    }

    #[test]
    fn unpriced_regions_give_a_lower_bound_and_say_so() {
        let cost = CostEstimate::for_spec(&spec(SpecLayer {
            region: Some("ap-south-1".into()),
            ..Default::default()
        }));
        assert!(!cost.complete);
        assert_eq!(item(&cost, "GPU nodes").per_hour, None);
        assert_eq!(cost.per_hour, 0.0);
        assert!(cost.notes.iter().any(|n| n.contains("ap-south-1")));
    }
}
