//! The `synchost` command line: parsing and one function per command.

mod admin;
mod diff;
mod dlq;
mod output;
mod plugin;
mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::runtime::{LoadError, Runtime, Tenants};
use crate::state::{PipelineId, RunId, RunStatus, SqliteStore, StateStore};
use crate::sync::SyncOptions;

/// Keeps destination data sets in step with sources, through sandboxed
/// WebAssembly connectors.
#[derive(Parser)]
#[command(name = "synchost", version, about, long_about = None)]
struct Cli {
    /// The host config file; tenant files are read from its `tenants_dir`.
    #[arg(long, short, global = true, env = "SYNCHOST_CONFIG", default_value = "synchost.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check synchost.toml, every tenant file and every plugin, running nothing.
    Validate,
    /// Look at, sign and verify plugin files.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run one sync of a pipeline now.
    Sync {
        /// The pipeline, as TENANT/PIPELINE.
        pipeline: PipelineId,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Event syncs: stop after this many batches, even if more events wait.
        #[arg(long)]
        max_batches: Option<u64>,
        /// Diff syncs: apply the plan even if a guard blocks it, this once.
        #[arg(long)]
        force: bool,
    },
    /// Show what a diff sync would do now, writing nothing.
    Plan {
        /// The pipeline, as TENANT/PIPELINE.
        pipeline: PipelineId,
        #[arg(long)]
        json: bool,
    },
    /// Apply the exact plan of a blocked diff run.
    Approve {
        run: RunId,
        #[arg(long)]
        json: bool,
    },
    /// Recompute a diff run's plan from its archive and compare.
    Replay {
        run: RunId,
        /// Replay with another version of a transform: NAME=FILE.wasm (repeatable).
        #[arg(long = "plugin", value_name = "NAME=FILE.wasm")]
        plugins: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run every scheduled pipeline until Ctrl-C or SIGTERM, reloading
    /// tenants whose files change.
    Run,
    /// Ask the running daemon to reload the tenant files now.
    Reload {
        #[arg(long)]
        json: bool,
    },
    /// Tenants, pipelines, plugin versions, last runs and health: from the
    /// running daemon, or from the files and state when none runs.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show the runs the host has recorded.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// An event pipeline's dead letters: list, retry or drop them.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Build a demo tenant and show a diff sync and an event sync end to end.
    Demo {
        /// Where to build it; a new temporary directory if not given.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The newest runs first.
    List {
        /// Only this pipeline (TENANT/PIPELINE).
        pipeline: Option<PipelineId>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One run in full.
    Show {
        run: RunId,
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line and returns the process's exit code: 0 on success,
/// 1 when the command failed (a failed sync included), 2 for bad usage.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SYNCHOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate => validate(&cli.config),
        Command::Plugin(command) => plugin::run(&cli.config, command),
        Command::Sync { pipeline, json, max_batches, force } => {
            let options = SyncOptions { max_batches, force, ..SyncOptions::default() };
            sync(&cli.config, &pipeline, json, options)
        }
        Command::Plan { pipeline, json } => diff::plan(&cli.config, &pipeline, json),
        Command::Approve { run, json } => diff::approve(&cli.config, run, json),
        Command::Replay { run, plugins, json } => diff::replay(&cli.config, run, &plugins, json),
        Command::Run => {
            // One tenant's broken file or plugin must not keep the others
            // from syncing: the daemon serves every tenant that loads.
            let runtime = load(&cli.config, Tenants::Serving)?;
            crate::daemon::run(runtime)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload { json } => admin::reload(&cli.config, json),
        Command::Status { json } => admin::status(&cli.config, json),
        Command::Runs(RunsCommand::List { pipeline, limit, json }) => {
            let state = open_state(&cli.config)?;
            let runs = state.runs(pipeline.as_ref(), limit)?;
            output::runs(&runs, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs(RunsCommand::Show { run, json }) => {
            let state = open_state(&cli.config)?;
            let record = state.run(run)?.with_context(|| format!("no run {run}"))?;
            let batches = state.batches(run)?;
            output::run_with_batches(&record, &batches, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(command) => dlq::run(&cli.config, command),
        Command::Demo { dir } => {
            crate::demo::run(dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(config: &Path, tenants: Tenants<'_>) -> anyhow::Result<Runtime> {
    Runtime::load(config, tenants).map_err(|e| match e {
        LoadError::Config(errors) => anyhow::anyhow!("the configuration has {} problem(s):\n{errors}", errors.0.len()),
        other => other.into(),
    })
}

fn open_state(config: &Path) -> anyhow::Result<SqliteStore> {
    let host = crate::config::HostConfig::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(SqliteStore::open(&host.state_dir)?)
}

fn validate(config: &Path) -> anyhow::Result<ExitCode> {
    match Runtime::check(config, Tenants::All) {
        Ok(checked) => {
            let config = checked.config;
            let pipelines: usize = config.tenants.iter().map(|t| t.pipelines.len()).sum();
            let plugins: usize = config.tenants.iter().map(|t| t.plugins.len()).sum();
            println!(
                "{}: valid ({} tenant(s), {plugins} plugin(s), {pipelines} pipeline(s))",
                config.host.path.display(),
                config.tenants.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(LoadError::Config(errors)) => {
            eprintln!("{errors}");
            eprintln!("{} problem(s) found", errors.0.len());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

fn sync(config: &Path, id: &PipelineId, json: bool, options: SyncOptions) -> anyhow::Result<ExitCode> {
    let runtime = load(config, Tenants::Only(&id.tenant))?;
    let stop = AtomicBool::new(false);
    let mut job = runtime.job(id, &stop, options)?;
    job.observer = progress::observer(json);
    let report = job.run()?;
    output::report(&report, json);
    Ok(if report.status == RunStatus::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
