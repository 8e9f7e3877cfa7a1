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
    /// How the board is attached: "SXM" (NVLink baseboard) or "PCIe" (a card). The same chip as a PCIe
    /// card has lower clocks, power and often bandwidth, so one is never judged by the other's figures.
    pub form_factor: &'static str,
    /// Memory of one GPU, GiB as sold (16 for a T4).
    pub memory_gib: u32,
    /// Dense (no sparsity) fp16/bf16 tensor-core matmul peak, TFLOP/s; for GPUs without bf16, the fp16 figure.
    pub fp16_dense_tflops: f64,
    /// fp32 (non-tensor) peak, TFLOP/s.
    pub fp32_tflops: f64,
    /// Memory bandwidth, GB/s (10^9 bytes).
    pub memory_bandwidth_gbs: f64,
    /// The board's maximum power (TDP), W: the power cap a busy GPU runs into.
    pub tdp_watts: u32,
    /// The product names nvidia-smi and PyTorch print for this model, e.g. "Tesla T4".
    pub smi_names: &'static [&'static str],
    /// Where the figures come from (datasheet URL), plus a note when derived.
    pub source: &'static str,
}

impl GpuModel {
    /// The model's name as it appears, as one word, in nvidia-smi's product names: "T4", "A10G", "H100",
    /// "V100" (for both V100 sizes).
    pub fn token(&self) -> String {
        self.id
            .split('-')
            .next()
            .unwrap_or(self.id)
            .to_ascii_uppercase()
    }

    /// True when a GPU that nvidia-smi (or PyTorch) calls `name` is of this model: its product name
    /// has [`Self::token`] as a whole word, so an "NVIDIA L40S" is not an L4 and an "NVIDIA A100" not an
    /// A10G.
    pub fn matches_name(&self, name: &str) -> bool {
        let token = self.token();
        name_words(name).any(|w| w == token)
    }
}

/// The upper-case words of a product name: "NVIDIA A100-SXM4-40GB" → NVIDIA, A100, SXM4, 40GB.
fn name_words(name: &str) -> impl Iterator<Item = String> + '_ {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
}

/// The catalog's model of a GPU that nvidia-smi (or PyTorch) calls `name`, with `memory_mib` of memory
/// where known. An exact product name ([`GpuModel::smi_names`]) wins; otherwise the model whose
/// [`GpuModel::token`] is a word of the name, whose form factor fits (a name with "PCIe" or "NVL" in it
/// is a card, never an SXM part) and whose memory is closest. `None` for a GPU the catalog does not
/// have (an H100 PCIe, an A10, an RTX 4090): its figures are then measured but not judged.
pub fn identify_gpu(name: &str, memory_mib: Option<u64>) -> Option<&'static GpuModel> {
    let trimmed = name.trim();
    if let Some(exact) = gpus()
        .iter()
        .find(|g| g.smi_names.iter().any(|n| n.eq_ignore_ascii_case(trimmed)))
    {
        return Some(exact);
    }
    let card = name_words(trimmed).any(|w| w == "PCIE" || w == "NVL");
    gpus()
        .iter()
        .filter(|g| g.matches_name(trimmed) && !(card && g.form_factor == "SXM"))
        .min_by_key(|g| match memory_mib {
            Some(mib) => (u64::from(g.memory_gib) * 1024).abs_diff(mib),
            None => 0,
        })
}

/// One EC2 instance type with GPUs, as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceType {
    /// API name, e.g. "g4dn.xlarge".
    pub name: &'static str,
    /// [`GpuModel::id`] of its GPUs.
    pub gpu: &'static str,
    /// GPUs the instance shows its pods (what `nvidia.com/gpu` counts and `workspace.gpus` asks for).
    pub gpu_count: u32,
    /// 1 when each of those GPUs is a whole one; n when each is a 1/n slice of a physical GPU, its
    /// memory and its time (a g6f's NVIDIA vGPU: an eighth, a quarter or half of an L4). A slice is
    /// still one device to the pod, so `gpu_count` stays 1.
    pub gpu_divisor: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// Instance memory, GiB.
    pub memory_gib: f64,
    /// The most pods kubelet runs on one node of the type: the EKS AMI's default, from the VPC CNI's
    /// ENI limits (ENIs × (IPv4 addresses per ENI − 1) + 2, as `misc/eni-max-pods.txt` of
    /// aws/amazon-vpc-cni-k8s lists it). Kubelet reserves memory per possible pod
    /// ([`crate::capacity`]).
    pub max_pods: u32,
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

    /// Memory of one of the GPUs the instance shows, GiB: the model's, or the slice's share of it.
    pub fn gpu_memory_gib(&self) -> u32 {
        self.gpu_model().memory_gib / self.gpu_divisor.max(1)
    }

    /// Total GPU memory of the instance, GiB.
    pub fn total_gpu_memory_gib(&self) -> u32 {
        self.gpu_count * self.gpu_memory_gib()
    }

    /// True when its GPUs are slices of a physical GPU (see [`Self::gpu_divisor`]).
    pub fn is_fractional_gpu(&self) -> bool {
        self.gpu_divisor > 1
    }

    /// The GPUs in words: "1 × T4", "8 × H100 80GB SXM", or "1/8 × L4" for a slice.
    pub fn gpu_summary(&self) -> String {
        let name = self.gpu_model().name.trim_start_matches("NVIDIA ");
        if self.is_fractional_gpu() {
            format!("{}/{} × {name}", self.gpu_count, self.gpu_divisor)
        } else {
            format!("{} × {name}", self.gpu_count)
        }
    }

    /// On-demand price per hour in `region`, or `None` where the catalog has no price (not offered, or
    /// a region the catalog does not price).
    pub fn price_per_hour(&self, region: &str) -> Option<f64> {
        self.prices
            .iter()
            .find(|(r, _)| *r == region)
            .map(|(_, p)| *p)
    }

    /// Other types with the same GPUs (model, count and slice) and at least this one's vCPUs and
    /// memory, priced in `region` at no more than twice this one's on-demand price: cheapest first, at
    /// most three. A spot node group may also launch them, so EC2 finds capacity in more spot pools
    /// (AWS's spot best practice: be flexible across instance types); the workspace, sized for this
    /// type, fits on each.
    pub fn spot_alternatives(&self, region: &str) -> Vec<&'static InstanceType> {
        let Some(own) = self.price_per_hour(region) else {
            return Vec::new();
        };
        let mut alternatives: Vec<(&'static InstanceType, f64)> = instances()
            .iter()
            .filter(|i| {
                i.name != self.name
                    && i.gpu == self.gpu
                    && i.gpu_count == self.gpu_count
                    && i.gpu_divisor == self.gpu_divisor
                    && i.vcpus >= self.vcpus
                    && i.memory_gib >= self.memory_gib
            })
            .filter_map(|i| {
                i.price_per_hour(region)
                    .filter(|p| *p <= 2.0 * own)
                    .map(|p| (i, p))
            })
            .collect();
        alternatives.sort_by(|a, b| a.1.total_cmp(&b.1));
        alternatives.into_iter().take(3).map(|(i, _)| i).collect()
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
                i.gpu_count >= 1 && i.gpu_divisor >= 1 && i.vcpus >= 2 && i.memory_gib >= 8.0,
                "{} looks wrong",
                i.name
            );
            assert!(
                (20..=737).contains(&i.max_pods),
                "{}: max_pods {} is not an ENI limit",
                i.name,
                i.max_pods
            );
            // p5e is not offered in us-east-1, and no price source for it was at hand (see its row).
            assert!(
                i.price_per_hour("us-east-1").is_some() || i.name == "p5e.48xlarge",
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
    fn spot_alternatives_have_the_same_gpus_and_room_for_the_workspace() {
        let names = |name: &str, region: &str| -> Vec<&str> {
            instance(name)
                .unwrap()
                .spot_alternatives(region)
                .iter()
                .map(|i| i.name)
                .collect()
        };
        // g4dn.4xlarge ($1.204) costs more than twice a g4dn.xlarge ($0.526).
        assert_eq!(names("g4dn.xlarge", "us-west-2"), ["g4dn.2xlarge"]);
        assert_eq!(
            names("g5.xlarge", "us-west-2"),
            ["g5.2xlarge", "g5.4xlarge"]
        );
        // Never fewer GPUs, never a different GPU, nothing unpriced in the region.
        for i in instances() {
            for alt in i.spot_alternatives("us-east-1") {
                assert_eq!((alt.gpu, alt.gpu_count), (i.gpu, i.gpu_count), "{}", i.name);
                assert!(alt.vcpus >= i.vcpus && alt.memory_gib >= i.memory_gib);
                assert!(alt.price_per_hour("us-east-1").is_some());
            }
        }
        assert!(names("g4dn.xlarge", "ap-south-1").is_empty());
    }

    #[test]
    fn the_families_a_learner_picks_are_all_there() {
        for family in [
            "g4dn", "g5", "g6", "g6e", "g6f", "gr6", "p3", "p4d", "p4de", "p5", "p5e", "p5en",
            "p6-b200",
        ] {
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
        assert_eq!(
            gpu("h200").unwrap().fp16_dense_tflops,
            h100.fp16_dense_tflops
        );
        assert!(
            gpu("b200").unwrap().fp16_dense_tflops < 2500.0,
            "4,500 is B200's sparse figure"
        );
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
    fn every_gpu_has_a_power_cap_a_form_factor_and_names_that_find_it() {
        for g in gpus() {
            assert!(g.tdp_watts >= 70 && g.tdp_watts <= 1000, "{}", g.id);
            assert!(["SXM", "PCIe"].contains(&g.form_factor), "{}", g.id);
            assert!(!g.smi_names.is_empty(), "{}", g.id);
            for name in g.smi_names {
                assert!(g.matches_name(name), "{}: {name}", g.id);
                assert_eq!(identify_gpu(name, None).map(|m| m.id), Some(g.id), "{name}");
            }
        }
        for id in [
            "t4",
            "a10g",
            "l4",
            "l40s",
            "v100",
            "a100",
            "a100-80gb",
            "h100",
            "h200",
            "b200",
        ] {
            assert!(gpu(id).is_some(), "{id} missing");
        }
    }

    #[test]
    fn gpus_are_identified_by_their_product_names() {
        let id = |name: &str, mib: Option<u64>| identify_gpu(name, mib).map(|g| g.id);
        // Exact names, as nvidia-smi prints them (memory in MiB as it reports it).
        assert_eq!(id("NVIDIA H100 80GB HBM3", Some(81559)), Some("h100"));
        assert_eq!(id("NVIDIA H200", Some(143771)), Some("h200"));
        assert_eq!(id("NVIDIA B200", Some(183359)), Some("b200"));
        assert_eq!(id("Tesla V100-SXM2-32GB", Some(32768)), Some("v100-32gb"));
        assert_eq!(id("  nvidia a100-sxm4-80gb ", None), Some("a100-80gb"));
        // Not an exact name: the model's word, the form factor and the closest memory decide.
        assert_eq!(id("NVIDIA A100 80GB HBM2e", Some(81920)), Some("a100-80gb"));
        assert_eq!(id("NVIDIA A100 40GB", Some(40960)), Some("a100"));
        assert_eq!(
            id("Tesla V100-SXM2 (engineering sample)", Some(16384)),
            Some("v100")
        );
        // A card is not judged by its SXM sibling's figures; a near name is not the model.
        assert_eq!(id("NVIDIA H100 PCIe", Some(81559)), None);
        assert_eq!(id("NVIDIA H100 NVL", Some(95830)), None);
        assert_eq!(id("NVIDIA A100-PCIE-40GB", Some(40960)), None);
        assert_eq!(id("NVIDIA L40", Some(46068)), None);
        assert_eq!(id("NVIDIA A10", Some(23028)), None);
        assert_eq!(id("NVIDIA GH200 480GB", Some(97871)), None);
        assert_eq!(id("NVIDIA GeForce RTX 4090", Some(24564)), None);
        assert_eq!(id("", None), None);
        // Whole words only: an L40S is not an L4, an A100 not an A10G.
        assert!(!gpu("l4").unwrap().matches_name("NVIDIA L40S"));
        assert!(gpu("l4").unwrap().matches_name("NVIDIA L4"));
        assert!(!gpu("a10g").unwrap().matches_name("NVIDIA A100-SXM4-40GB"));
        assert!(
            gpu("v100-32gb")
                .unwrap()
                .matches_name("Tesla V100-SXM2-16GB")
        );
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
        assert!(
            !l4.is_empty()
                && l4
                    .iter()
                    .all(|r| ["g6", "g6f", "gr6"].contains(&r.instance.family()))
        );

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
    fn a_gpu_slice_is_one_device_with_its_share_of_the_memory() {
        let eighth = instance("g6f.large").unwrap();
        assert_eq!((eighth.gpu_count, eighth.gpu_divisor), (1, 8));
        assert!(eighth.is_fractional_gpu());
        assert_eq!(eighth.gpu_memory_gib(), 3, "an eighth of an L4's 24 GB");
        assert_eq!(eighth.total_gpu_memory_gib(), 3);
        assert_eq!(eighth.gpu_summary(), "1/8 × L4");
        assert_eq!(instance("g6f.4xlarge").unwrap().total_gpu_memory_gib(), 12);
        let whole = instance("gr6.4xlarge").unwrap();
        assert!(!whole.is_fractional_gpu());
        assert_eq!(whole.gpu_summary(), "1 × L4");
        assert_eq!(
            instance("p5en.48xlarge").unwrap().gpu_summary(),
            "8 × H200 SXM"
        );
        assert_eq!(
            instance("p4de.24xlarge").unwrap().total_gpu_memory_gib(),
            640
        );
        assert_eq!(
            instance("p6-b200.48xlarge").unwrap().quota_class(),
            QuotaClass::P
        );
        assert_eq!(eighth.quota_class(), QuotaClass::GAndVt);
        // A GPU-memory filter counts the slice's memory, not the whole L4's.
        let at_least = |gib: u32| -> Vec<&str> {
            CatalogFilter {
                min_gpu_memory_gib: Some(gib),
                region: "us-east-1".into(),
                ..Default::default()
            }
            .apply()
            .iter()
            .filter(|r| r.instance.is_fractional_gpu())
            .map(|r| r.instance.name)
            .collect()
        };
        assert_eq!(at_least(12), ["g6f.4xlarge"]);
        assert!(at_least(16).is_empty());
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
