//! `gpulab config`: the effective settings and where each came from.

use clap::{Args, Subcommand};

use crate::args::{GlobalArgs, SpecArgs};
use crate::printer::{Printer, table};

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Show the effective settings, and which source (default, file, env, flag) each came from.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Output format; `toml` prints a gpulab.toml of the effective settings.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Field, value and source.
    Table,
    /// Fields with values and sources, as JSON.
    Json,
    /// The effective settings as a gpulab.toml.
    Toml,
}

pub(crate) fn run(
    global: &GlobalArgs,
    command: &ConfigCommand,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let ConfigCommand::Show(args) = command;
    let resolved = args.spec.resolve(global)?;
    match args.output {
        Format::Json => printer.json(&resolved.explain()),
        Format::Toml => printer.line(
            toml::to_string(&resolved.spec)
                .expect("a spec always serialises as TOML")
                .trim_end(),
        ),
        Format::Table => {
            let rows: Vec<Vec<String>> = resolved
                .explain()
                .into_iter()
                .map(|f| {
                    let value = match f.value {
                        serde_json::Value::Null => "(unset)".to_string(),
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    vec![f.field.to_string(), value, f.source.to_string()]
                })
                .collect();
            printer.line(table(&["FIELD", "VALUE", "SOURCE"], &rows));
            printer.hint("\nThese are not validated yet; `gpulab plan` validates them.");
        }
    }
    Ok(())
}
