//! `gpulab catalog`: the GPU instance types, their GPUs and prices.

use clap::Args;
use gpulab_core::catalog::{self, CatalogFilter};
use gpulab_core::spec::SpecInputs;

use super::lab::Format;
use crate::args::GlobalArgs;
use crate::printer::{Printer, dollars, table};

#[derive(Debug, Args)]
pub(crate) struct CatalogArgs {
    /// Only this GPU model, e.g. t4, a10g, l4, l40s, v100, a100, h100.
    #[arg(long)]
    gpu: Option<String>,
    /// Only instances with at least this much GPU memory in total, GiB.
    #[arg(long, value_name = "GIB")]
    min_gpu_memory: Option<u32>,
    /// Only instances at or below this on-demand price, USD per hour.
    #[arg(long, value_name = "USD")]
    max_price: Option<f64>,
    /// Region whose prices to show [default: the lab's region].
    #[arg(long)]
    region: Option<String>,
    /// List the GPU models and their datasheet figures instead.
    #[arg(long, conflicts_with_all = ["gpu", "min_gpu_memory", "max_price"])]
    gpus: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

pub(crate) fn run(
    global: &GlobalArgs,
    args: &CatalogArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    if args.gpus {
        let gpus = catalog::gpus();
        if args.output == Format::Json {
            printer.json(&gpus);
            return Ok(());
        }
        let rows: Vec<Vec<String>> = gpus
            .iter()
            .map(|g| {
                vec![
                    g.id.into(),
                    g.name.into(),
                    g.architecture.into(),
                    format!("{} GiB", g.memory_gib),
                    format!("{:.0}", g.fp16_dense_tflops),
                    format!("{:.1}", g.fp32_tflops),
                    format!("{:.0}", g.memory_bandwidth_gbs),
                    g.tdp_watts.to_string(),
                ]
            })
            .collect();
        printer.line(table(
            &[
                "ID",
                "GPU",
                "ARCH",
                "MEMORY",
                "FP16 TFLOP/S",
                "FP32 TFLOP/S",
                "GB/S",
                "MAX W",
            ],
            &rows,
        ));
        printer.hint(
            "\nDense datasheet peaks; `gpulab catalog --gpus -o json` gives each figure's source.",
        );
        return Ok(());
    }

    let region = match &args.region {
        Some(region) => region.clone(),
        None => {
            let cwd = std::env::current_dir()
                .map_err(|e| gpulab_core::Error::io("read the working directory", e))?;
            let inputs = SpecInputs {
                explicit_file: global.config.clone(),
                ..SpecInputs::from_process(&cwd, None)
            };
            inputs.resolve()?.spec.region
        }
    };
    if let Some(gpu) = &args.gpu
        && catalog::gpu(gpu).is_none()
    {
        let known: Vec<&str> = catalog::gpus().iter().map(|g| g.id).collect();
        return Err(gpulab_core::Error::Usage {
            message: format!("--gpu {gpu}: not a GPU model in gpulab's catalog"),
            hint: format!(
                "one of: {} (`gpulab catalog --gpus` lists them)",
                known.join(", ")
            ),
        });
    }
    let filter = CatalogFilter {
        gpu: args.gpu.clone(),
        min_gpu_memory_gib: args.min_gpu_memory,
        max_price_per_hour: args.max_price,
        region: region.clone(),
    };
    let rows = filter.apply();
    if args.output == Format::Json {
        printer.json(&rows);
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let i = r.instance;
            vec![
                i.name.into(),
                i.gpu_summary(),
                format!("{} GiB", i.total_gpu_memory_gib()),
                i.vcpus.to_string(),
                format!("{} GiB", i.memory_gib),
                dollars(r.price_per_hour, 3),
                dollars(r.price_per_hour.map(|p| p * catalog::HOURS_PER_MONTH), 0),
            ]
        })
        .collect();
    if cells.is_empty() {
        printer.hint("No instance type matches; loosen --gpu, --min-gpu-memory or --max-price.");
        return Ok(());
    }
    printer.line(table(
        &[
            "INSTANCE",
            "GPUS",
            "GPU MEMORY",
            "VCPUS",
            "MEMORY",
            "$/HOUR",
            "$/MONTH",
        ],
        &cells,
    ));
    printer.hint(format!(
        "\nOn-demand Linux prices in {region} ('-': not offered there, or not priced); as of {}.",
        catalog::PRICES_AS_OF
    ));
    Ok(())
}
