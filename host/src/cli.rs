//! The `synchost` command line: parsing and one function per command.

use crate::cli::out::outln;
mod admin;
mod diff;
mod dlq;
mod init;
pub(crate) mod out;
mod output;
mod plugin;
mod plugin_run;
mod plugin_test;
mod progress;
mod scaffold;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::runtime::{LoadError, Runtime, Tenants};
use crate::state::{PipelineId, RunId, RunStatus, StateStore};
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
    /// Make a new host directory that validates and syncs as it is: a
    /// synchost.toml, the bundled plugins, and an example tenant.
    #[command(
        after_help = "Example:\n  synchost init mysync && synchost --config mysync/synchost.toml sync example/people"
    )]
    Init {
        /// The directory to make (it may exist, but not hold a synchost.toml).
        dir: PathBuf,
    },
    /// Check synchost.toml, every tenant file and every plugin, running nothing.
    #[command(after_help = "Example:\n  synchost --config /etc/synchost/synchost.toml validate")]
    Validate,
    /// Look at, sign and verify plugin files.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run one sync of a pipeline now. Ctrl-C stops it at the next batch
    /// boundary. Exits 0 when it succeeded, 3 when some operations did not
    /// apply, 130 when stopped, 1 otherwise.
    #[command(
        after_help = "Examples:\n  synchost sync acme/roster\n  synchost sync acme/orders --max-batches 10 --json"
    )]
    Sync {
        /// The pipeline, as TENANT/PIPELINE.
        pipeline: PipelineId,
        /// Print the report as JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
        /// Event syncs: stop after this many batches, even if more events wait.
        #[arg(long)]
        max_batches: Option<u64>,
        /// Diff syncs: apply the plan even if a guard blocks it, this once.
        #[arg(long)]
        force: bool,
    },
    /// Reconcile an event pipeline now: diff its source's snapshot against
    /// the destination and repair the drift the event stream will not,
    /// never writing a key's older state over a newer one. Exits as `sync`.
    #[command(
        after_help = "Examples:\n  synchost reconcile acme/orders --plan\n  synchost reconcile acme/orders --json"
    )]
    Reconcile {
        /// The event pipeline, as TENANT/PIPELINE.
        pipeline: PipelineId,
        /// Show the drift and the repair, writing nothing.
        #[arg(long)]
        plan: bool,
        /// Repair even if a guard (`max_change_ratio`) blocks it, this once.
        #[arg(long, conflicts_with = "plan")]
        force: bool,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what a diff sync would do now, writing nothing.
    #[command(after_help = "Example:\n  synchost plan acme/roster")]
    Plan {
        /// The pipeline, as TENANT/PIPELINE.
        pipeline: PipelineId,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apply the exact plan of a blocked diff run.
    #[command(after_help = "Example:\n  synchost approve 42")]
    Approve {
        /// The run, by the id `synchost runs list` shows.
        run: RunId,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recompute a diff run's plan from its archive and compare.
    #[command(
        after_help = "Examples:\n  synchost replay 42\n  synchost replay 42 --plugin lms_fields=new_field_mapper.wasm"
    )]
    Replay {
        /// The run, by the id `synchost runs list` shows.
        run: RunId,
        /// Replay with another version of a transform: NAME=FILE.wasm (repeatable).
        #[arg(long = "plugin", value_name = "NAME=FILE.wasm")]
        plugins: Vec<String>,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run every scheduled pipeline until Ctrl-C or SIGTERM, reloading
    /// tenants whose files change.
    #[command(after_help = "Example:\n  synchost --config /etc/synchost/synchost.toml run")]
    Run,
    /// Ask the running daemon to reload the tenant files now.
    #[command(after_help = "Example:\n  synchost reload")]
    Reload {
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Tenants, pipelines, plugin versions, last runs and health: from the
    /// running daemon, or from the files and state when none runs. Exits 1
    /// when any tenant is not `ok`.
    #[command(after_help = "Example:\n  synchost status --json")]
    Status {
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Pause a pipeline: the daemon starts no run of it (scheduled or asked
    /// for) until it is resumed, across restarts. A run in progress finishes.
    #[command(after_help = "Example:\n  synchost pause acme/roster --reason \"source migration\"")]
    Pause {
        /// The pipeline, as TENANT/PIPELINE.
        pipeline: PipelineId,
        /// Why, for `status` and the console.
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused pipeline on its schedule.
    #[command(after_help = "Example:\n  synchost resume acme/roster")]
    Resume {
        /// The pipeline, as TENANT/PIPELINE.
        pipeline: PipelineId,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The hosts sharing this host's state store (those whose heartbeat is
    /// live), how many pipelines each owns, and the leases each holds now.
    #[command(after_help = "Example:\n  synchost hosts --json")]
    Hosts {
        /// Print JSON (errors too) instead of text.
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
    #[command(after_help = "Example:\n  synchost demo --dir ./demo")]
    Demo {
        /// Where to build it; a new temporary directory if not given.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The newest runs first.
    #[command(after_help = "Examples:\n  synchost runs list\n  synchost runs list acme/roster --limit 5 --json")]
    List {
        /// Only this pipeline (TENANT/PIPELINE).
        pipeline: Option<PipelineId>,
        /// How many runs to show, newest first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One run in full.
    #[command(after_help = "Example:\n  synchost runs show 42")]
    Show {
        /// The run, by the id `synchost runs list` shows.
        run: RunId,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line and returns the process's exit code: 0 on success,
/// 1 when the command failed (a failed sync included), 2 for bad usage.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let json = cli.command.json();
    match run(cli) {
        Ok(code) => code,
        // With --json, what the command prints is JSON, errors included.
        Err(e) if json => {
            outln!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// Whether the command was asked for JSON output.
    fn json(&self) -> bool {
        match self {
            Command::Sync { json, .. }
            | Command::Reconcile { json, .. }
            | Command::Plan { json, .. }
            | Command::Approve { json, .. }
            | Command::Replay { json, .. }
            | Command::Reload { json }
            | Command::Pause { json, .. }
            | Command::Resume { json, .. }
            | Command::Status { json }
            | Command::Hosts { json } => *json,
            Command::Runs(RunsCommand::List { json, .. } | RunsCommand::Show { json, .. }) => *json,
            Command::Plugin(command) => command.json(),
            Command::Dlq(command) => command.json(),
            Command::Validate | Command::Run | Command::Demo { .. } | Command::Init { .. } => false,
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SYNCHOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // SYNCHOST_LOG_FORMAT=json: one JSON object per line, for a log
    // collector, with each event's fields (tenant, pipeline, run, plugin…)
    // as keys. Otherwise text, in colour only on a terminal.
    let json = std::env::var("SYNCHOST_LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        builder.with_ansi(ansi).try_init()
    };
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate => validate(&cli.config),
        Command::Init { dir } => init::init(&dir),
        Command::Plugin(command) => plugin::run(&cli.config, command),
        Command::Sync { pipeline, json, max_batches, force } => {
            let options = SyncOptions { max_batches, force, ..SyncOptions::default() };
            sync(&cli.config, &pipeline, json, options)
        }
        Command::Reconcile { pipeline, plan, force, json } => {
            diff::reconcile(&cli.config, &pipeline, plan, force, json)
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
        Command::Hosts { json } => {
            let state = open_state(&cli.config)?;
            output::hosts(&state.hosts()?, &state.leases()?, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause { pipeline, reason, json } => admin::set_pause(&cli.config, &pipeline, Some(reason), json),
        Command::Resume { pipeline, json } => admin::set_pause(&cli.config, &pipeline, None, json),
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
            let archive = state.archive_files(run)?;
            output::run_with_batches(&record, &batches, &archive, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(command) => dlq::run(&cli.config, command),
        Command::Demo { dir } => {
            crate::demo::run(dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A sync's exit code: 0 when it did all it set out to; 1 when it failed or
/// stopped short; 3 when it ran to its end but some operations did not apply
/// (so scripts can tell "look at the dead letters" from "it broke"); 130
/// when Ctrl-C stopped it.
fn exit_code(status: RunStatus) -> ExitCode {
    match status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::SucceededWithErrors => ExitCode::from(3),
        RunStatus::Stopped if STOP.load(std::sync::atomic::Ordering::Relaxed) => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    }
}

/// Set by the first Ctrl-C or SIGTERM during a command that runs a sync.
static STOP: AtomicBool = AtomicBool::new(false);

/// Watches for Ctrl-C and SIGTERM on a thread of its own while a command
/// runs a sync: the first stops the run at its next batch boundary (it is
/// recorded as stopped, and what it committed stays); a second exits at once.
fn stop_on_signal() -> &'static AtomicBool {
    let watch = || {
        let Ok(signals) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        signals.block_on(async {
            if crate::daemon::wait_for_signal().await.is_err() {
                return;
            }
            STOP.store(true, std::sync::atomic::Ordering::Relaxed);
            eprintln!("stopping at the next batch boundary; Ctrl-C again to exit at once");
            if crate::daemon::wait_for_signal().await.is_ok() {
                eprintln!("exiting now: what was not committed is read again by the next run");
                std::process::exit(130);
            }
        });
    };
    if let Err(e) = std::thread::Builder::new().name("synchost-signals".into()).spawn(watch) {
        tracing::warn!("Ctrl-C will end the command at once, not at a batch boundary: {e}");
    }
    &STOP
}

fn load(config: &Path, tenants: Tenants<'_>) -> anyhow::Result<Runtime> {
    let runtime = Runtime::load(config, tenants).map_err(|e| match e {
        LoadError::Config(errors) => anyhow::anyhow!("the configuration has {} problem(s):\n{errors}", errors.0.len()),
        other => other.into(),
    })?;
    // The daemon serves every tenant; a one-off command (`sync`, `approve`)
    // loads one, and holds leases under a name of its own.
    Ok(if matches!(tenants, Tenants::Serving) { runtime } else { runtime.for_command() })
}

fn open_state(config: &Path) -> anyhow::Result<std::sync::Arc<dyn StateStore>> {
    let host = crate::config::HostConfig::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(crate::state::open(&host)?)
}

fn validate(config: &Path) -> anyhow::Result<ExitCode> {
    match Runtime::check(config, Tenants::All) {
        Ok(checked) => {
            let config = checked.config;
            let pipelines: usize = config.tenants.iter().map(|t| t.pipelines.len()).sum();
            let plugins: usize = config.tenants.iter().map(|t| t.plugins.len()).sum();
            outln!(
                "{}: valid ({} tenant(s), {plugins} plugin(s), {pipelines} pipeline(s))",
                config.host.path.display(),
                config.tenants.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(LoadError::Config(mut errors)) => {
            errors.sort_by_place();
            eprintln!("{errors}");
            eprintln!("{} problem(s) found", errors.0.len());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

fn sync(config: &Path, id: &PipelineId, json: bool, options: SyncOptions) -> anyhow::Result<ExitCode> {
    let runtime = load(config, Tenants::Only(&id.tenant))?;
    let stop = stop_on_signal();
    let mut job = runtime.job(id, stop, options)?;
    job.observer = progress::observer(json);
    let report = job.run()?;
    output::report(&report, json);
    Ok(exit_code(report.status))
}
