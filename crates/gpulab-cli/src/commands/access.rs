//! Reaching the workspace: `ssh`, `proxy` (for plain ssh, scp, rsync and VS Code), `ssh-config`,
//! `forward` and `jupyter`. All of them go through the Kubernetes API server's port-forward, so the lab
//! needs no public port.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use clap::Args;
use gpulab_core::Lab;
use gpulab_core::events::Reporter;
use gpulab_core::workspace::ports;

use super::lab::LabArg;
use crate::args::GlobalArgs;
use crate::printer::Printer;
use crate::progress::Progress;

#[derive(Debug, Args)]
pub(crate) struct SshArgs {
    #[command(flatten)]
    lab: LabArg,
    /// Force a terminal (as `ssh -t`).
    #[arg(short = 't', conflicts_with = "no_tty")]
    tty: bool,
    /// Never allocate a terminal (as `ssh -T`).
    #[arg(short = 'T')]
    no_tty: bool,
    /// A command to run instead of a shell (after `--`).
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// `gpulab ssh`: a shell (or one command) in the workspace; returns its exit code.
pub(crate) async fn ssh(global: &GlobalArgs, args: &SshArgs) -> gpulab_core::Result<i32> {
    let lab = args.lab.load(global).await?;
    let session = lab.ssh().await?;
    let command = (!args.command.is_empty()).then(|| args.command.join(" "));
    let tty = match (args.tty, args.no_tty) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let status = crate::terminal::interactive_session(&session, command, tty).await?;
    Ok(status.shell_code())
}

#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    #[command(flatten)]
    lab: LabArg,
}

/// `gpulab proxy`: bridge stdin/stdout to the workspace's sshd (an ssh ProxyCommand).
pub(crate) async fn proxy(global: &GlobalArgs, args: &ProxyArgs) -> gpulab_core::Result<()> {
    let lab = args.lab.load(global).await?;
    lab.proxy_process_stdio().await
}

#[derive(Debug, Args)]
pub(crate) struct SshConfigArgs {
    #[command(flatten)]
    lab: LabArg,
    /// When `up` has not recorded the workspace's host key: let ssh trust the first key it is shown
    /// (`StrictHostKeyChecking accept-new`). Without it, ssh-config refuses.
    #[arg(long)]
    accept_new_host_key: bool,
}

/// `gpulab ssh-config`: a Host block so plain `ssh`, `scp`, `rsync` and VS Code reach the workspace.
pub(crate) async fn ssh_config(
    global: &GlobalArgs,
    args: &SshConfigArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let lab = args.lab.load(global).await?;
    let alias = lab.write_ssh_config(args.accept_new_host_key)?.alias;
    printer.line(format!(
        "ssh {0}   (also: scp FILE {0}:/workspace/, VS Code Remote-SSH host {0})",
        alias
    ));
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct ForwardArgs {
    #[command(flatten)]
    lab: LabArg,
    /// The port in the workspace, e.g. 8888 (Jupyter) or 8000 (vLLM).
    port: u16,
    /// The local port [default: the same number].
    #[arg(long, value_name = "PORT")]
    local: Option<u16>,
}

/// Forward `port` and wait for Ctrl-C.
pub(crate) async fn forward_until_interrupted(
    lab: &Lab,
    port: u16,
    local: u16,
    global: &GlobalArgs,
    say: String,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let reporter: Arc<dyn Reporter> = Arc::new(Progress::new(true));
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, local));
    let handle = lab.forward(listen, port, reporter).await?;
    printer.line(say.replace("{addr}", &handle.local_addr().to_string()));
    if !global.quiet {
        printer.hint("Forwarding; Ctrl-C stops.");
    }
    let _ = tokio::signal::ctrl_c().await;
    handle.close().await;
    Ok(())
}

/// `gpulab forward PORT`.
pub(crate) async fn forward(
    global: &GlobalArgs,
    args: &ForwardArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let lab = args.lab.load(global).await?;
    let say = format!(
        "localhost port {} → workspace port {} (http://{{addr}})",
        args.local.unwrap_or(args.port),
        args.port
    );
    forward_until_interrupted(
        &lab,
        args.port,
        args.local.unwrap_or(args.port),
        global,
        say,
        printer,
    )
    .await
}

#[derive(Debug, Args)]
pub(crate) struct JupyterArgs {
    #[command(flatten)]
    lab: LabArg,
    /// The local port [default: 8888].
    #[arg(long, value_name = "PORT", default_value_t = ports::JUPYTER)]
    local: u16,
}

/// `gpulab jupyter`: forward Jupyter's port and print its URL with the token.
pub(crate) async fn jupyter(
    global: &GlobalArgs,
    args: &JupyterArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let lab = args.lab.load(global).await?;
    let token = lab.jupyter_token().await?;
    let say = format!("http://{{addr}}/lab?token={token}");
    forward_until_interrupted(&lab, ports::JUPYTER, args.local, global, say, printer).await
}
