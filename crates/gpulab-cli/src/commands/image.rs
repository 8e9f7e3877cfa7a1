//! `gpulab image dockerfile | build`: the workspace image (CUDA, PyTorch, vLLM, Jupyter, sshd, dev
//! tools), so that a pod started from it installs nothing.

use clap::{Args, Subcommand};
use gpulab_core::image::ImageOptions;
use gpulab_core::{Error, Lab};

use super::lab::Format;
use crate::args::{GlobalArgs, SpecArgs, lab_options};
use crate::printer::Printer;
use crate::progress::Progress;

/// The image commands.
#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Print the Dockerfile `build` uses; needs no AWS account.
    Dockerfile(ImageArgs),
    /// Build the image and push it to the lab's ECR repository (created when missing, deleted by
    /// `down`): with docker when a daemon answers, otherwise as a kaniko Job in the lab's cluster.
    Build(BuildArgs),
}

/// What goes into the image.
#[derive(Debug, Args)]
pub(crate) struct ImageArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Also install Slurm and munge, for `gpulab slurm setup` without a download.
    #[arg(long)]
    slurm: bool,
    /// Python packages instead of the default set (repeat; pin versions, e.g. --pip vllm==0.6.4).
    #[arg(long = "pip", value_name = "REQUIREMENT")]
    pip: Vec<String>,
}

/// `gpulab image build`.
#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Output format of the result.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

impl ImageArgs {
    /// The lab's validated spec and the image options; the base is the lab's workspace image (`--image`).
    fn resolve(
        &self,
        global: &GlobalArgs,
    ) -> gpulab_core::Result<(gpulab_core::spec::ValidSpec, ImageOptions)> {
        let spec = self.spec.resolve(global)?.validate()?;
        let mut options = ImageOptions::for_spec(&spec);
        options.slurm = self.slurm;
        if !self.pip.is_empty() {
            options.python_packages = self.pip.clone();
        }
        Ok((spec, options))
    }
}

/// Run an image command.
pub(crate) async fn run(
    global: &GlobalArgs,
    command: &ImageCommand,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    match command {
        ImageCommand::Dockerfile(args) => {
            let (_, options) = args.resolve(global)?;
            printer.line(options.dockerfile().trim_end());
            Ok(())
        }
        ImageCommand::Build(args) => build(global, args, printer).await,
    }
}

async fn build(
    global: &GlobalArgs,
    args: &BuildArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let (spec, options) = args.image.resolve(global)?;
    let lab = Lab::open(spec, lab_options()).await?;
    let name = lab.spec().spec.name.clone();
    let progress = Progress::new(global.quiet);
    let built = tokio::select! {
        built = lab.build_image(&options, &progress) => built,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    progress.finish();
    let built = built?;
    match args.output {
        Format::Json => printer.json(&built),
        Format::Table => {
            let builder = match built.builder {
                gpulab_core::image::Builder::Docker => "docker",
                gpulab_core::image::Builder::Kaniko => "kaniko in the lab's cluster",
            };
            printer.line(format!(
                "Built {} with {builder} and pushed it.",
                built.reference
            ));
            printer.line(format!(
                "  run the lab on it   gpulab up --name {name} --image {}",
                built.reference
            ));
            printer.line(format!(
                "  or in gpulab.toml   [workspace] image = \"{}\"",
                built.reference
            ));
        }
    }
    Ok(())
}
