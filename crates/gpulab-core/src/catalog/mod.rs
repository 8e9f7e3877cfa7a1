//! The GPU instance catalog: what each instance type carries, what it costs per hour, and what its GPUs
//! should achieve. The figures live in `data.rs` (instances, GPUs) and `regions.rs` (regions and regional
//! service prices); this module only gives them types and look-ups.

mod data;
mod regions;

use serde::Serialize;

pub use regions::{Region, SERVICE_PRICES_AS_OF, ServicePrices, region, regions};

/// When the instance prices were taken, and from where.
pub const PRICES_AS_OF: &str = data::PRICES_AS_OF;

/// Hours in a billing month, as AWS prices monthly figures.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// A GPU model and the datasheet figures the validation suite compares against.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuModel {
    /// Short id used by instance rows and the `--gpu` filter, lower case: "t4", "a10g", "h100".
    pub id: &'static str,
    /// Marketing name, e.g. "NVIDIA T4".
    pub name: &'static str,
    /// Architecture, e.g. "Turing".
    pub architecture: &'static str,
    /// Memory of one GPU, GiB as sold (16 for a T4).
    pub memory_gib: u32,
    /// Dense (no sparsity) fp16/bf16 tensor-core matmul peak, TFLOP/s; for GPUs without bf16, the fp16 figure.
    pub fp16_dense_tflops: f64,
    /// fp32 (non-tensor) peak, TFLOP/s.
    pub fp32_tflops: f64,
    /// Memory bandwidth, GB/s (10^9 bytes).
    pub memory_bandwidth_gbs: f64,
    /// Where the figures come from (datasheet URL), plus a note when derived.
    pub source: &'static str,
}

/// One EC2 instance type with GPUs, as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceType {
    /// API name, e.g. "g4dn.xlarge".
    pub name: &'static str,
    /// [`GpuModel::id`] of its GPUs.
    pub gpu: &'static str,
    /// GPUs in the instance.
    pub gpu_count: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// Instance memory, GiB.
    pub memory_gib: f64,
    /// On-demand Linux price per hour in USD, by region code; a region that does not offer the type is absent.
    pub prices: &'static [(&'static str, f64)],
}

impl InstanceType {
    /// The family, the part before the dot: "g4dn" for "g4dn.xlarge".
    pub fn family(&self) -> &'static str {
        self.name.split('.').next().unwrap_or(self.name)
    }

    /// The GPU model of this instance.
    pub fn gpu_model(&self) -> &'static GpuModel {
        gpu(self.gpu).expect("every catalog row names a GPU model from the catalog")
    }

    /// Total GPU memory of the instance, GiB.
    pub fn total_gpu_memory_gib(&self) -> u32 {
        self.gpu_count * self.gpu_model().memory_gib
    }

    /// On-demand price per hour in `region`, or `None` where the catalog has no price (not offered, or
    /// a region the catalog does not price).
    pub fn price_per_hour(&self, region: &str) -> Option<f64> {
        self.prices
            .iter()
            .find(|(r, _)| *r == region)
            .map(|(_, p)| *p)
    }

    /// The EC2 vCPU quota this type draws on: G and VT instances share one, P instances another.
    pub fn quota_class(&self) -> QuotaClass {
        if self.name.starts_with('p') {
            QuotaClass::P
        } else {
            QuotaClass::GAndVt
        }
    }
}

/// The Service Quotas bucket an instance family counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum QuotaClass {
    /// "Running On-Demand G and VT instances" (and its spot twin).
    GAndVt,
    /// "Running On-Demand P instances" (and its spot twin).
    P,
}

/// All GPU instance types, sorted by family then size.
pub fn instances() -> &'static [InstanceType] {
    data::INSTANCES
}

/// All GPU models.
pub fn gpus() -> &'static [GpuModel] {
    data::GPUS
}

/// The instance type called `name`, if the catalog has it.
pub fn instance(name: &str) -> Option<&'static InstanceType> {
    data::INSTANCES.iter().find(|i| i.name == name)
}

/// The GPU model with id `id` (case-insensitive), if the catalog has it.
pub fn gpu(id: &str) -> Option<&'static GpuModel> {
    data::GPUS.iter().find(|g| g.id.eq_ignore_ascii_case(id))
}

/// Well-known EC2 families that have no GPU, so that a typo like `m5.large` gets a precise answer.
pub fn is_known_cpu_family(instance_type: &str) -> bool {
    const CPU_PREFIXES: &[&str] = &[
        "a1", "c", "d", "hpc", "i", "im", "is", "m", "r", "t", "u", "x", "z",
    ];
    let family = instance_type.split('.').next().unwrap_or_default();
    let letters: String = family
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    instance_type.contains('.') && CPU_PREFIXES.contains(&letters.as_str())
}

/// A query over the catalog, as `gpulab catalog` and `gpulab.catalog()` take it.
#[derive(Debug, Clone, Default)]
pub struct CatalogFilter {
    /// Only this GPU model ([`GpuModel::id`], case-insensitive).
    pub gpu: Option<String>,
    /// Only instances with at least this much GPU memory in total, GiB.
    pub min_gpu_memory_gib: Option<u32>,
    /// Only instances priced at or below this, USD per hour, in the filter's region.
    pub max_price_per_hour: Option<f64>,
    /// The region whose prices are shown and filtered on.
    pub region: String,
}

/// One row of a catalog listing: the instance and its price in the listing's region.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogRow {
    /// The instance type.
    #[serde(flatten)]
    pub instance: &'static InstanceType,
    /// Its GPU model.
    pub gpu_model: &'static GpuModel,
    /// On-demand price per hour in the listing's region; `None` where not offered or not priced.
    pub price_per_hour: Option<f64>,
}

impl CatalogFilter {
    /// The instances that pass the filter, in catalog order. An instance with no price in the region
    /// never passes a price filter.
    pub fn apply(&self) -> Vec<CatalogRow> {
        instances()
            .iter()
            .filter(|i| {
                self.gpu
                    .as_deref()
                    .is_none_or(|g| i.gpu.eq_ignore_ascii_case(g))
            })
            .filter(|i| {
                self.min_gpu_memory_gib
                    .is_none_or(|m| i.total_gpu_memory_gib() >= m)
            })
            .map(|i| CatalogRow {
                instance: i,
                gpu_model: i.gpu_model(),
                price_per_hour: i.price_per_hour(&self.region),
            })
            .filter(|row| match self.max_price_per_hour {
                None => true,
                Some(max) => row.price_per_hour.is_some_and(|p| p <= max),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instance_names_a_known_gpu_and_is_priced_in_the_core_regions() {
        for i in instances() {
            assert!(
                gpu(i.gpu).is_some(),
                "{} names unknown GPU {}",
                i.name,
                i.gpu
            );
            assert!(
                i.gpu_count >= 1 && i.vcpus >= 4 && i.memory_gib >= 16.0,
                "{} looks wrong",
                i.name
            );
            assert!(
                i.price_per_hour("us-east-1").is_some(),
                "{} has no us-east-1 price",
                i.name
            );
            for (region, price) in i.prices {
                assert!(
                    regions::region(region).is_some(),
                    "{}: unknown region {region}",
                    i.name
                );
                assert!(
                    *price > 0.1 && *price < 150.0,
                    "{} in {region}: implausible ${price}/h",
                    i.name
                );
            }
        }
    }

    #[test]
    fn the_families_a_learner_picks_are_all_there() {
        for family in ["g4dn", "g5", "g6", "g6e", "p3", "p4d", "p5"] {
            assert!(
                instances().iter().any(|i| i.family() == family),
                "family {family} missing"
            );
        }
    }

    #[test]
    fn default_instance_matches_the_original_scripts() {
        let t4 = instance("g4dn.xlarge").unwrap();
        assert_eq!(
            (t4.gpu, t4.gpu_count, t4.vcpus, t4.memory_gib),
            ("t4", 1, 4, 16.0)
        );
        assert_eq!(t4.total_gpu_memory_gib(), 16);
        assert_eq!(t4.quota_class(), QuotaClass::GAndVt);
        let quad = instance("g4dn.12xlarge").unwrap();
        assert_eq!(
            (quad.gpu_count, quad.vcpus, quad.memory_gib),
            (4, 48, 192.0)
        );
        assert_eq!(instance("p3.2xlarge").unwrap().gpu, "v100");
        assert_eq!(instance("p3.2xlarge").unwrap().quota_class(), QuotaClass::P);
    }

    #[test]
    fn gpu_figures_are_dense_not_sparse() {
        // Sparse figures are exactly twice the dense ones; a datasheet slip shows up as an H100 near 2000.
        let h100 = gpu("H100").unwrap();
        assert!(h100.fp16_dense_tflops > 900.0 && h100.fp16_dense_tflops < 1000.0);
        assert!(gpu("t4").unwrap().fp16_dense_tflops < 70.0);
        for g in gpus() {
            assert!(
                g.fp16_dense_tflops > g.fp32_tflops,
                "{}: tensor peak below fp32",
                g.id
            );
            assert!(g.source.contains("https://"), "{}: no cited source", g.id);
        }
    }

    #[test]
    fn filters_combine() {
        let region = "us-east-1".to_string();
        let l4 = CatalogFilter {
            gpu: Some("L4".into()),
            region: region.clone(),
            ..Default::default()
        }
        .apply();
        assert!(!l4.is_empty() && l4.iter().all(|r| r.instance.family() == "g6"));

        let big = CatalogFilter {
            min_gpu_memory_gib: Some(320),
            region: region.clone(),
            ..Default::default()
        }
        .apply();
        assert!(big.iter().all(|r| r.instance.total_gpu_memory_gib() >= 320));
        assert!(big.iter().any(|r| r.instance.name == "p5.48xlarge"));

        let cheap = CatalogFilter {
            max_price_per_hour: Some(0.6),
            region,
            ..Default::default()
        }
        .apply();
        assert!(cheap.iter().any(|r| r.instance.name == "g4dn.xlarge"));
        assert!(cheap.iter().all(|r| r.price_per_hour.unwrap() <= 0.6));

        let nowhere = CatalogFilter {
            max_price_per_hour: Some(100.0),
            region: "mars-1".into(),
            ..Default::default()
        };
        assert!(
            nowhere.apply().is_empty(),
            "unpriced rows never pass a price filter"
        );
    }

    #[test]
    fn cpu_families_are_recognised() {
        assert!(is_known_cpu_family("m5.large"));
        assert!(is_known_cpu_family("t3.micro"));
        assert!(is_known_cpu_family("c7i.4xlarge"));
        assert!(!is_known_cpu_family("g4dn.xlarge"));
        assert!(!is_known_cpu_family("banana"));
    }
}
