use super::{GpuModel, InstanceType};

// Catalog figures: GPU datasheet numbers and EC2 GPU instance types with on-demand Linux prices.
//
// Price sources (see `PRICES_AS_OF`):
// - us-east-1, every row present before 2026-08: the AWS Price List API snapshot that AWS embeds in Karpenter,
//   `aws/karpenter-provider-aws` `pkg/providers/pricing/zz_generated.pricing_aws.go`, header
//   "generated at 2026-01-19T13:23:24Z for us-east-1". It has the June-2025 P4/P5 cuts (p4d 21.957642,
//   p5.48xlarge 55.04) and p5.4xlarge.
// - us-west-2 and eu-west-1: `skypilot-org/skypilot-catalog` `catalogs/v7/aws/vms.csv` (the SkyPilot
//   catalog, itself built from the AWS price list). The stored copy predates the June-2025 P-family cut
//   (it lists p4d at 32.7726 and p5.48xlarge at 98.32 in us-east-1, and no p5.4xlarge), so it was used
//   only for G and P3 rows, whose us-east-1 figures are identical in both sources (checked for every
//   g4dn/g5/g6/g6e/p3/p3dn row). P4d/P5 prices outside us-east-1 are marked `unverified`.
// - Region availability outside us-east-1 is as of that SkyPilot snapshot (H1 2025): it had no g6, g6e
//   or p5 rows for eu-west-1, so eu-west-1 is left out of those rows.
// - g6f, gr6, p4de, p5en and p6-b200 (added 2026-08), us-east-1: the same Karpenter price list, regenerated
//   "at 2026-07-20T13:44:30Z for us-east-1"; elsewhere marked `unverified` in each row.
//
// Instance shapes (GPUs, vCPUs, memory) are EC2 DescribeInstanceTypes figures as carried by the same
// SkyPilot catalog, except p5.4xlarge (see its row) and the rows added 2026-08, whose shapes come from
// Karpenter's generated instance-type reference (website/content/en/preview/reference/instance-types.md
// in aws/karpenter-provider-aws, itself from DescribeInstanceTypes). `max_pods` is the VPC CNI's
// `misc/eni-max-pods.txt` (aws/amazon-vpc-cni-k8s, 2026-08-11), which the EKS AMI's nodeadm computes
// the same way (nodeadm/internal/kubelet/eni_max_pods.go).

/// When the on-demand prices below were taken, and from where.
pub(super) const PRICES_AS_OF: &str = "us-east-1: 2026-01-19 (AWS Price List API, via the table generated \
into aws/karpenter-provider-aws); us-west-2 and eu-west-1: H1 2025 (SkyPilot AWS catalog, before the \
June-2025 P4/P5 price cut) for G and P3 types, P4d/P5 there estimated (marked unverified); g6f, gr6, p4de, \
p5en, p6-b200: us-east-1 2026-07-20 (the same price list, regenerated), us-west-2 assumed equal (unverified); \
p5e: not priced";

/// GPU models and the NVIDIA datasheet figures the validation suite compares against. Tensor figures
/// are dense: NVIDIA's datasheets for Ampere and newer print the figure with 2:4 structured sparsity
/// (marked "*" or "with sparsity"), which no dense matmul can reach, so it is halved here. Every figure
/// is at the GPU's maximum boost clock; `tdp_watts` is the board's maximum power, which a busy GPU runs
/// into before it reaches that clock on the power-capped parts (T4, L4). The figure each field takes from
/// its source is named in the comment above it.
pub(super) const GPUS: &[GpuModel] = &[
    GpuModel {
        id: "t4",
        name: "NVIDIA T4",
        architecture: "Turing",
        form_factor: "PCIe",
        memory_gib: 16,
        // Datasheet: Mixed Precision (FP16/FP32) 65 TFLOPS; Turing has no bf16 and no sparsity.
        fp16_dense_tflops: 65.0,
        // Datasheet: Single-Precision 8.1 TFLOPS.
        fp32_tflops: 8.1,
        // Datasheet: 16 GB GDDR6, 320+ GB/s.
        memory_bandwidth_gbs: 320.0,
        // Datasheet: Max Power Consumption 70 watts.
        tdp_watts: 70,
        smi_names: &["Tesla T4"],
        source: "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf \
                 (65 TFLOPS mixed-precision fp16, 8.1 TFLOPS fp32, 16 GB GDDR6 at 320+ GB/s, 70 W)",
    },
    GpuModel {
        id: "a10g",
        name: "NVIDIA A10G",
        architecture: "Ampere",
        form_factor: "PCIe",
        memory_gib: 24,
        // unverified: NVIDIA publishes no A10G datasheet. 70 dense fp16/bf16 TFLOPS is Baseten's figure
        // (the A10 datasheet says 125 dense); AWS does not publish a tensor rate for the A10G.
        fp16_dense_tflops: 70.0,
        // unverified: A10 datasheet value; the A10G's higher boost clock gives about 31.5 (Baseten).
        fp32_tflops: 31.2,
        // A10 datasheet: 24 GB GDDR6, 600 GB/s; AWS's g5 page says the same for the A10G.
        memory_bandwidth_gbs: 600.0,
        // unverified: the power limit nvidia-smi shows on g5 instances (the A10 datasheet says 150 W).
        tdp_watts: 300,
        smi_names: &["NVIDIA A10G"],
        source: "No public NVIDIA A10G datasheet. Memory (24 GB GDDR6) and bandwidth (600 GB/s) as the A10: \
                 https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a10/pdf/a10-datasheet.pdf and \
                 https://aws.amazon.com/ec2/instance-types/g5/ ; the A10G is an AWS-only variant of the same \
                 GA102 part with a lower tensor rate than the A10's 125 dense TFLOPS: 70 dense fp16/bf16 per \
                 https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/ ; fp32 is the A10 figure; \
                 300 W is the power limit nvidia-smi reports on g5",
    },
    GpuModel {
        id: "l4",
        name: "NVIDIA L4",
        architecture: "Ada Lovelace",
        form_factor: "PCIe",
        memory_gib: 24,
        // Datasheet: FP16 242 TFLOPS*, BF16 242 TFLOPS*, * with sparsity: dense 121.
        fp16_dense_tflops: 121.0,
        // Datasheet: FP32 30.3 TFLOPS.
        fp32_tflops: 30.3,
        // Datasheet: 24 GB GDDR6, 300 GB/s.
        memory_bandwidth_gbs: 300.0,
        // Datasheet: Max thermal design power (TDP) 72 W.
        tdp_watts: 72,
        smi_names: &["NVIDIA L4"],
        source: "https://resources.nvidia.com/en-us-data-center-overview/l4-gpu-datasheet \
                 (https://www.nvidia.com/en-us/data-center/l4/): 242 fp16/bf16 TFLOPS is with sparsity, \
                 dense = 121; 30.3 TFLOPS fp32; 24 GB GDDR6 at 300 GB/s; 72 W",
    },
    GpuModel {
        id: "l40s",
        name: "NVIDIA L40S",
        architecture: "Ada Lovelace",
        form_factor: "PCIe",
        memory_gib: 48,
        // Datasheet: BF16 / FP16 Tensor Core 362.05 | 733* TFLOPS (dense | sparse).
        fp16_dense_tflops: 362.05,
        // Datasheet: FP32 91.6 TFLOPS.
        fp32_tflops: 91.6,
        // Datasheet: 48 GB GDDR6 with ECC, 864 GB/s.
        memory_bandwidth_gbs: 864.0,
        // Datasheet: Max Power Consumption 350 W.
        tdp_watts: 350,
        smi_names: &["NVIDIA L40S"],
        source: "https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413 \
                 (bf16/fp16 tensor 362.05 dense | 733 sparse; 91.6 TFLOPS fp32; 48 GB GDDR6 at 864 GB/s; 350 W)",
    },
    GpuModel {
        id: "v100",
        name: "NVIDIA V100 SXM2 16GB",
        architecture: "Volta",
        form_factor: "SXM",
        memory_gib: 16,
        // Datasheet (V100 SXM2): Tensor Performance 125 TFLOPS; Volta has no bf16 and no sparsity.
        fp16_dense_tflops: 125.0,
        // Datasheet: Single-Precision 15.7 TFLOPS.
        fp32_tflops: 15.7,
        // Datasheet: Memory Bandwidth 900 GB/sec.
        memory_bandwidth_gbs: 900.0,
        // Datasheet: Max Power Consumption 300 WATTS.
        tdp_watts: 300,
        smi_names: &["Tesla V100-SXM2-16GB"],
        source: "https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf \
                 (V100 SXM2: 125 TFLOPS tensor, 15.7 TFLOPS fp32, 900 GB/s HBM2, 300 W; p3 uses the 16 GB part)",
    },
    GpuModel {
        id: "v100-32gb",
        name: "NVIDIA V100 SXM2 32GB",
        architecture: "Volta",
        form_factor: "SXM",
        memory_gib: 32,
        // As the 16 GB part: the same datasheet gives one column for both SXM2 memory sizes.
        fp16_dense_tflops: 125.0,
        fp32_tflops: 15.7,
        memory_bandwidth_gbs: 900.0,
        tdp_watts: 300,
        smi_names: &["Tesla V100-SXM2-32GB"],
        source: "https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf \
                 (V100 SXM2 32 GB, as in p3dn.24xlarge: same compute, bandwidth and power as the 16 GB part)",
    },
    GpuModel {
        id: "a100",
        name: "NVIDIA A100 40GB SXM",
        architecture: "Ampere",
        form_factor: "SXM",
        memory_gib: 40,
        // Datasheet: BFLOAT16 / FP16 Tensor Core 312 TFLOPS | 624 TFLOPS* (dense | sparse).
        fp16_dense_tflops: 312.0,
        // Datasheet: FP32 19.5 TFLOPS.
        fp32_tflops: 19.5,
        // Datasheet (A100 40GB SXM column): GPU Memory Bandwidth 1,555 GB/s.
        memory_bandwidth_gbs: 1555.0,
        // Datasheet (SXM): Max Thermal Design Power (TDP) 400W.
        tdp_watts: 400,
        smi_names: &["NVIDIA A100-SXM4-40GB"],
        source: "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf \
                 (A100 40GB SXM: bf16/fp16 tensor 312 dense | 624 sparse; 19.5 TFLOPS fp32; 1,555 GB/s HBM2; 400 W)",
    },
    GpuModel {
        id: "a100-80gb",
        name: "NVIDIA A100 80GB SXM",
        architecture: "Ampere",
        form_factor: "SXM",
        memory_gib: 80,
        // Datasheet: BFLOAT16 / FP16 Tensor Core 312 TFLOPS | 624 TFLOPS*, as the 40 GB part.
        fp16_dense_tflops: 312.0,
        // Datasheet: FP32 19.5 TFLOPS.
        fp32_tflops: 19.5,
        // Datasheet (A100 80GB SXM column): GPU Memory Bandwidth 2,039 GB/s (HBM2e).
        memory_bandwidth_gbs: 2039.0,
        // Datasheet (SXM): Max Thermal Design Power (TDP) 400W.
        tdp_watts: 400,
        smi_names: &["NVIDIA A100-SXM4-80GB"],
        source: "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf \
                 (A100 80GB SXM: bf16/fp16 tensor 312 dense | 624 sparse; 19.5 TFLOPS fp32; 2,039 GB/s HBM2e; 400 W)",
    },
    GpuModel {
        id: "h100",
        name: "NVIDIA H100 80GB SXM",
        architecture: "Hopper",
        form_factor: "SXM",
        memory_gib: 80,
        // Datasheet (H100 SXM): BFLOAT16 / FP16 Tensor Core 1,979 teraFLOPS*, * with sparsity; the
        // Hopper whitepaper's dense figure is 989.4.
        fp16_dense_tflops: 989.4,
        // Datasheet: FP32 67 teraFLOPS.
        fp32_tflops: 67.0,
        // Datasheet: GPU memory 80GB, GPU memory bandwidth 3.35TB/s.
        memory_bandwidth_gbs: 3350.0,
        // Datasheet: Max thermal design power (TDP) Up to 700W (configurable).
        tdp_watts: 700,
        smi_names: &["NVIDIA H100 80GB HBM3"],
        source: "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet \
                 (H100 SXM: 1,979 bf16/fp16 TFLOPS is with sparsity; dense 989.4 per the NVIDIA H100 \
                 (Hopper) architecture whitepaper; 67 TFLOPS fp32; 80 GB HBM3 at 3.35 TB/s; up to 700 W)",
    },
    GpuModel {
        id: "h200",
        name: "NVIDIA H200 SXM",
        architecture: "Hopper",
        form_factor: "SXM",
        memory_gib: 141,
        // Datasheet (H200 SXM): BFLOAT16 / FP16 Tensor Core 1,979 TFLOPS*, * with sparsity: the same
        // GH100 compute as the H100 SXM, so the same dense 989.4.
        fp16_dense_tflops: 989.4,
        // Datasheet: FP32 67 TFLOPS.
        fp32_tflops: 67.0,
        // Datasheet: GPU Memory 141GB, GPU Memory Bandwidth 4.8TB/s (HBM3e).
        memory_bandwidth_gbs: 4800.0,
        // Datasheet: Max Thermal Design Power (TDP) Up to 700W (configurable).
        tdp_watts: 700,
        smi_names: &["NVIDIA H200"],
        source: "https://www.nvidia.com/en-us/data-center/h200/ (H200 datasheet, SXM column: 1,979 bf16/fp16 \
                 TFLOPS is with sparsity, dense 989.4 as the H100 SXM; 67 TFLOPS fp32; 141 GB HBM3e at 4.8 TB/s; \
                 up to 700 W)",
    },
    GpuModel {
        id: "b200",
        name: "NVIDIA B200",
        architecture: "Blackwell",
        form_factor: "SXM",
        memory_gib: 180,
        // HGX B200 datasheet, per 8 GPUs: FP16/BF16 Tensor Core 36 PFLOPS with sparsity: 4.5 sparse,
        // 2.25 dense per GPU (the Blackwell architecture technical brief gives the same 2.25 dense).
        fp16_dense_tflops: 2250.0,
        // HGX B200 datasheet: FP32 600 TFLOPS per 8 GPUs: 75 per GPU. (The technical brief says 80
        // at 1,000 W; the lower figure is kept, so that a healthy GPU is never judged against too high a peak.)
        fp32_tflops: 75.0,
        // HGX B200 datasheet: Total GPU memory 1.4 TB (180 GB per GPU) and memory bandwidth 64 TB/s
        // per 8 GPUs: 8 TB/s per GPU (HBM3e).
        memory_bandwidth_gbs: 8000.0,
        // Blackwell architecture technical brief: HGX B200 at 1,000 W per GPU.
        tdp_watts: 1000,
        smi_names: &["NVIDIA B200"],
        source: "https://www.nvidia.com/en-us/data-center/hgx/ (HGX B200, 8 GPUs: 36 PFLOPS fp16/bf16 with \
                 sparsity, 600 TFLOPS fp32, 1.4 TB HBM3e at 64 TB/s) and \
                 https://resources.nvidia.com/en-us-blackwell-architecture (per GPU at 1,000 W: 2.25 PFLOPS \
                 dense fp16/bf16)",
    },
];

/// EC2 instance types with NVIDIA GPUs, sorted by family then size. Prices are on-demand Linux, USD per
/// hour; a region that does not offer the type (in the sources above) is absent from `prices`.
#[rustfmt::skip]
pub(super) const INSTANCES: &[InstanceType] = &[
    // g4dn: NVIDIA T4.
    InstanceType { name: "g4dn.xlarge", gpu: "t4", gpu_count: 1, gpu_divisor: 1, vcpus: 4, memory_gib: 16.0, max_pods: 29, prices: &[("us-east-1", 0.526), ("us-west-2", 0.526), ("eu-west-1", 0.587)] },
    InstanceType { name: "g4dn.2xlarge", gpu: "t4", gpu_count: 1, gpu_divisor: 1, vcpus: 8, memory_gib: 32.0, max_pods: 29, prices: &[("us-east-1", 0.752), ("us-west-2", 0.752), ("eu-west-1", 0.838)] },
    InstanceType { name: "g4dn.4xlarge", gpu: "t4", gpu_count: 1, gpu_divisor: 1, vcpus: 16, memory_gib: 64.0, max_pods: 29, prices: &[("us-east-1", 1.204), ("us-west-2", 1.204), ("eu-west-1", 1.342)] },
    InstanceType { name: "g4dn.8xlarge", gpu: "t4", gpu_count: 1, gpu_divisor: 1, vcpus: 32, memory_gib: 128.0, max_pods: 58, prices: &[("us-east-1", 2.176), ("us-west-2", 2.176), ("eu-west-1", 2.426)] },
    InstanceType { name: "g4dn.12xlarge", gpu: "t4", gpu_count: 4, gpu_divisor: 1, vcpus: 48, memory_gib: 192.0, max_pods: 234, prices: &[("us-east-1", 3.912), ("us-west-2", 3.912), ("eu-west-1", 4.362)] },
    InstanceType { name: "g4dn.16xlarge", gpu: "t4", gpu_count: 1, gpu_divisor: 1, vcpus: 64, memory_gib: 256.0, max_pods: 58, prices: &[("us-east-1", 4.352), ("us-west-2", 4.352), ("eu-west-1", 4.853)] },
    InstanceType { name: "g4dn.metal", gpu: "t4", gpu_count: 8, gpu_divisor: 1, vcpus: 96, memory_gib: 384.0, max_pods: 737, prices: &[("us-east-1", 7.824), ("us-west-2", 7.824), ("eu-west-1", 8.724)] },
    // g5: NVIDIA A10G.
    InstanceType { name: "g5.xlarge", gpu: "a10g", gpu_count: 1, gpu_divisor: 1, vcpus: 4, memory_gib: 16.0, max_pods: 58, prices: &[("us-east-1", 1.006), ("us-west-2", 1.006), ("eu-west-1", 1.123)] },
    InstanceType { name: "g5.2xlarge", gpu: "a10g", gpu_count: 1, gpu_divisor: 1, vcpus: 8, memory_gib: 32.0, max_pods: 58, prices: &[("us-east-1", 1.212), ("us-west-2", 1.212), ("eu-west-1", 1.35296)] },
    InstanceType { name: "g5.4xlarge", gpu: "a10g", gpu_count: 1, gpu_divisor: 1, vcpus: 16, memory_gib: 64.0, max_pods: 234, prices: &[("us-east-1", 1.624), ("us-west-2", 1.624), ("eu-west-1", 1.81287)] },
    InstanceType { name: "g5.8xlarge", gpu: "a10g", gpu_count: 1, gpu_divisor: 1, vcpus: 32, memory_gib: 128.0, max_pods: 234, prices: &[("us-east-1", 2.448), ("us-west-2", 2.448), ("eu-west-1", 2.73271)] },
    InstanceType { name: "g5.12xlarge", gpu: "a10g", gpu_count: 4, gpu_divisor: 1, vcpus: 48, memory_gib: 192.0, max_pods: 737, prices: &[("us-east-1", 5.672), ("us-west-2", 5.672), ("eu-west-1", 6.33167)] },
    InstanceType { name: "g5.16xlarge", gpu: "a10g", gpu_count: 1, gpu_divisor: 1, vcpus: 64, memory_gib: 256.0, max_pods: 234, prices: &[("us-east-1", 4.096), ("us-west-2", 4.096), ("eu-west-1", 4.57237)] },
    InstanceType { name: "g5.24xlarge", gpu: "a10g", gpu_count: 4, gpu_divisor: 1, vcpus: 96, memory_gib: 384.0, max_pods: 737, prices: &[("us-east-1", 8.144), ("us-west-2", 8.144), ("eu-west-1", 9.09117)] },
    InstanceType { name: "g5.48xlarge", gpu: "a10g", gpu_count: 8, gpu_divisor: 1, vcpus: 192, memory_gib: 768.0, max_pods: 345, prices: &[("us-east-1", 16.288), ("us-west-2", 16.288), ("eu-west-1", 18.18233)] },
    // g6: NVIDIA L4. Not offered in eu-west-1 in the SkyPilot snapshot (it was in eu-central-1, eu-north-1,
    // eu-west-2 and eu-west-3).
    InstanceType { name: "g6.xlarge", gpu: "l4", gpu_count: 1, gpu_divisor: 1, vcpus: 4, memory_gib: 16.0, max_pods: 58, prices: &[("us-east-1", 0.8048), ("us-west-2", 0.8048)] },
    InstanceType { name: "g6.2xlarge", gpu: "l4", gpu_count: 1, gpu_divisor: 1, vcpus: 8, memory_gib: 32.0, max_pods: 58, prices: &[("us-east-1", 0.9776), ("us-west-2", 0.9776)] },
    InstanceType { name: "g6.4xlarge", gpu: "l4", gpu_count: 1, gpu_divisor: 1, vcpus: 16, memory_gib: 64.0, max_pods: 234, prices: &[("us-east-1", 1.3232), ("us-west-2", 1.3232)] },
    InstanceType { name: "g6.8xlarge", gpu: "l4", gpu_count: 1, gpu_divisor: 1, vcpus: 32, memory_gib: 128.0, max_pods: 234, prices: &[("us-east-1", 2.0144), ("us-west-2", 2.0144)] },
    InstanceType { name: "g6.12xlarge", gpu: "l4", gpu_count: 4, gpu_divisor: 1, vcpus: 48, memory_gib: 192.0, max_pods: 234, prices: &[("us-east-1", 4.6016), ("us-west-2", 4.6016)] },
    InstanceType { name: "g6.16xlarge", gpu: "l4", gpu_count: 1, gpu_divisor: 1, vcpus: 64, memory_gib: 256.0, max_pods: 737, prices: &[("us-east-1", 3.3968), ("us-west-2", 3.3968)] },
    InstanceType { name: "g6.24xlarge", gpu: "l4", gpu_count: 4, gpu_divisor: 1, vcpus: 96, memory_gib: 384.0, max_pods: 737, prices: &[("us-east-1", 6.6752), ("us-west-2", 6.6752)] },
    InstanceType { name: "g6.48xlarge", gpu: "l4", gpu_count: 8, gpu_divisor: 1, vcpus: 192, memory_gib: 768.0, max_pods: 737, prices: &[("us-east-1", 13.3504), ("us-west-2", 13.3504)] },
    // g6f: a slice of an NVIDIA L4 through NVIDIA vGPU (the GRID driver, which the EKS AL2023 NVIDIA AMI
    // installs for G6f), one device to the pod: g6f.large and .xlarge an eighth (2861 MiB of GPU memory),
    // .2xlarge a quarter, .4xlarge half. Shapes: Karpenter's generated instance-type reference
    // (aws/karpenter-provider-aws website/content/en/preview/reference/instance-types.md, from EC2
    // DescribeInstanceTypes, which reports the slice's memory but a GPU count of 0).
    // unverified: us-west-2 prices assumed equal to us-east-1 (G prices are the same in both for every
    // other G row here); us-east-1 from the Karpenter price list of 2026-07-20.
    InstanceType { name: "g6f.large", gpu: "l4", gpu_count: 1, gpu_divisor: 8, vcpus: 2, memory_gib: 8.0, max_pods: 20, prices: &[("us-east-1", 0.202), ("us-west-2", 0.202)] },
    InstanceType { name: "g6f.xlarge", gpu: "l4", gpu_count: 1, gpu_divisor: 8, vcpus: 4, memory_gib: 16.0, max_pods: 58, prices: &[("us-east-1", 0.2375), ("us-west-2", 0.2375)] },
    InstanceType { name: "g6f.2xlarge", gpu: "l4", gpu_count: 1, gpu_divisor: 4, vcpus: 8, memory_gib: 32.0, max_pods: 58, prices: &[("us-east-1", 0.475), ("us-west-2", 0.475)] },
    InstanceType { name: "g6f.4xlarge", gpu: "l4", gpu_count: 1, gpu_divisor: 2, vcpus: 16, memory_gib: 64.0, max_pods: 234, prices: &[("us-east-1", 0.95), ("us-west-2", 0.95)] },
    // g6e: NVIDIA L40S. Not offered in eu-west-1 in the SkyPilot snapshot (Europe: eu-central-1 and
    // eu-north-1 only).
    InstanceType { name: "g6e.xlarge", gpu: "l40s", gpu_count: 1, gpu_divisor: 1, vcpus: 4, memory_gib: 32.0, max_pods: 58, prices: &[("us-east-1", 1.861), ("us-west-2", 1.861)] },
    InstanceType { name: "g6e.2xlarge", gpu: "l40s", gpu_count: 1, gpu_divisor: 1, vcpus: 8, memory_gib: 64.0, max_pods: 58, prices: &[("us-east-1", 2.24208), ("us-west-2", 2.24208)] },
    InstanceType { name: "g6e.4xlarge", gpu: "l40s", gpu_count: 1, gpu_divisor: 1, vcpus: 16, memory_gib: 128.0, max_pods: 234, prices: &[("us-east-1", 3.00424), ("us-west-2", 3.00424)] },
    InstanceType { name: "g6e.8xlarge", gpu: "l40s", gpu_count: 1, gpu_divisor: 1, vcpus: 32, memory_gib: 256.0, max_pods: 234, prices: &[("us-east-1", 4.52856), ("us-west-2", 4.52856)] },
    InstanceType { name: "g6e.12xlarge", gpu: "l40s", gpu_count: 4, gpu_divisor: 1, vcpus: 48, memory_gib: 384.0, max_pods: 292, prices: &[("us-east-1", 10.49264), ("us-west-2", 10.49264)] },
    InstanceType { name: "g6e.16xlarge", gpu: "l40s", gpu_count: 1, gpu_divisor: 1, vcpus: 64, memory_gib: 512.0, max_pods: 737, prices: &[("us-east-1", 7.57719), ("us-west-2", 7.57719)] },
    InstanceType { name: "g6e.24xlarge", gpu: "l40s", gpu_count: 4, gpu_divisor: 1, vcpus: 96, memory_gib: 768.0, max_pods: 492, prices: &[("us-east-1", 15.06559), ("us-west-2", 15.06559)] },
    InstanceType { name: "g6e.48xlarge", gpu: "l40s", gpu_count: 8, gpu_divisor: 1, vcpus: 192, memory_gib: 1536.0, max_pods: 492, prices: &[("us-east-1", 30.13118), ("us-west-2", 30.13118)] },
    // gr6: NVIDIA L4 with more memory per vCPU (8 GiB) than g6. Shapes from Karpenter's instance-type
    // reference (as g6f); us-east-1 prices from the Karpenter price list of 2026-07-20.
    // unverified: us-west-2 prices assumed equal to us-east-1.
    InstanceType { name: "gr6.4xlarge", gpu: "l4", gpu_count: 1, gpu_divisor: 1, vcpus: 16, memory_gib: 128.0, max_pods: 234, prices: &[("us-east-1", 1.5392), ("us-west-2", 1.5392)] },
    InstanceType { name: "gr6.8xlarge", gpu: "l4", gpu_count: 1, gpu_divisor: 1, vcpus: 32, memory_gib: 256.0, max_pods: 234, prices: &[("us-east-1", 2.4464), ("us-west-2", 2.4464)] },
    // p3: NVIDIA V100 SXM2 16 GB.
    InstanceType { name: "p3.2xlarge", gpu: "v100", gpu_count: 1, gpu_divisor: 1, vcpus: 8, memory_gib: 61.0, max_pods: 58, prices: &[("us-east-1", 3.06), ("us-west-2", 3.06), ("eu-west-1", 3.305)] },
    InstanceType { name: "p3.8xlarge", gpu: "v100", gpu_count: 4, gpu_divisor: 1, vcpus: 32, memory_gib: 244.0, max_pods: 234, prices: &[("us-east-1", 12.24), ("us-west-2", 12.24), ("eu-west-1", 13.22)] },
    InstanceType { name: "p3.16xlarge", gpu: "v100", gpu_count: 8, gpu_divisor: 1, vcpus: 64, memory_gib: 488.0, max_pods: 234, prices: &[("us-east-1", 24.48), ("us-west-2", 24.48), ("eu-west-1", 26.44)] },
    // p3dn: NVIDIA V100 SXM2 32 GB.
    InstanceType { name: "p3dn.24xlarge", gpu: "v100-32gb", gpu_count: 8, gpu_divisor: 1, vcpus: 96, memory_gib: 768.0, max_pods: 737, prices: &[("us-east-1", 31.212), ("us-west-2", 31.212), ("eu-west-1", 33.711)] },
    // p4d: NVIDIA A100 40 GB. us-east-1 is after the June-2025 cut (32.7726 -> 21.957642, exactly x0.67).
    // unverified: us-west-2 assumed equal to us-east-1 (they were equal before the cut, at 32.7726);
    // unverified: eu-west-1 estimated as the pre-cut 35.39655 x 0.67, not read from a post-cut source.
    InstanceType { name: "p4d.24xlarge", gpu: "a100", gpu_count: 8, gpu_divisor: 1, vcpus: 96, memory_gib: 1152.0, max_pods: 737, prices: &[("us-east-1", 21.957642), ("us-west-2", 21.957642), ("eu-west-1", 23.715689)] },
    // p4de: NVIDIA A100 80 GB. us-east-1 from the Karpenter price list of 2026-07-20 (after the June-2025
    // P4 cut); shape from Karpenter's instance-type reference (96 vCPUs, 1152 GiB, 8 × 80 GiB).
    // unverified: us-west-2 assumed equal to us-east-1, as for p4d.
    InstanceType { name: "p4de.24xlarge", gpu: "a100-80gb", gpu_count: 8, gpu_divisor: 1, vcpus: 96, memory_gib: 1152.0, max_pods: 737, prices: &[("us-east-1", 27.44705), ("us-west-2", 27.44705)] },
    // p5: NVIDIA H100 80 GB. us-east-1 is after the June-2025 cut (p5.48xlarge 98.32 -> 55.04).
    // unverified: vCPUs/memory of p5.4xlarge (launched Aug 2025, after the SkyPilot snapshot) are from a
    // third-party table (16 vCPUs, 256 GiB), not read from the EC2 docs.
    // unverified: us-west-2 prices assumed equal to us-east-1 (p5 was priced the same in both before the
    // cut; p5.4xlarge is known to be offered in us-west-2). eu-west-1 left out: no p5 there in the
    // SkyPilot snapshot, and no post-cut source found for either size.
    InstanceType { name: "p5.4xlarge", gpu: "h100", gpu_count: 1, gpu_divisor: 1, vcpus: 16, memory_gib: 256.0, max_pods: 118, prices: &[("us-east-1", 6.88), ("us-west-2", 6.88)] },
    InstanceType { name: "p5.48xlarge", gpu: "h100", gpu_count: 8, gpu_divisor: 1, vcpus: 192, memory_gib: 2048.0, max_pods: 100, prices: &[("us-east-1", 55.04), ("us-west-2", 55.04)] },
    // p5e and p5en: NVIDIA H200 (141 GB). Shapes from Karpenter's instance-type reference (192 vCPUs,
    // 2048 GiB, 8 × 144384 MiB); p5en has Intel Sapphire Rapids hosts and PCIe Gen5 where p5e has AMD.
    // p5en us-east-1 from the Karpenter price list of 2026-07-20.
    // unverified: p5en us-west-2 assumed equal to us-east-1.
    // p5e.48xlarge has no price here: the us-east-1 price list has no p5e row (it is offered in us-east-2
    // and us-west-2, mostly through EC2 Capacity Blocks), and no source for those regions was at hand.
    // `plan` then says the price is unknown rather than guess.
    InstanceType { name: "p5e.48xlarge", gpu: "h200", gpu_count: 8, gpu_divisor: 1, vcpus: 192, memory_gib: 2048.0, max_pods: 100, prices: &[] },
    InstanceType { name: "p5en.48xlarge", gpu: "h200", gpu_count: 8, gpu_divisor: 1, vcpus: 192, memory_gib: 2048.0, max_pods: 198, prices: &[("us-east-1", 63.296), ("us-west-2", 63.296)] },
    // p6-b200: NVIDIA B200. Shape from Karpenter's instance-type reference (192 vCPUs, 2048 GiB, 8 GPUs of
    // 183359 MiB); us-east-1 from the Karpenter price list of 2026-07-20.
    // unverified: us-west-2 assumed equal to us-east-1.
    InstanceType { name: "p6-b200.48xlarge", gpu: "b200", gpu_count: 8, gpu_divisor: 1, vcpus: 192, memory_gib: 2048.0, max_pods: 198, prices: &[("us-east-1", 113.9328), ("us-west-2", 113.9328)] },
];
