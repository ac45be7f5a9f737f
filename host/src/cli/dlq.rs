//! `synchost dlq`: an event pipeline's dead letters — list them, put them back
//! into the retry queue, or drop them. Retry and drop act on the letters named
//! with `--id` (repeatable) or on all of them with `--all`, never on an
//! implicit "everything", since dropping a letter loses the operation for good.

use crate::cli::out::outln;
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::state::{DeadLetter, PipelineId, StateStore};

#[derive(Subcommand)]
pub(super) enum DlqCommand {
    /// The pipeline's dead letters, oldest first, with reason and operation.
    #[command(after_help = "Example:\n  synchost dlq list acme/orders --json")]
    List {
        /// The event pipeline, as TENANT/PIPELINE.
        pipeline: PipelineId,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back into the retry queue, due now: the next sync
    /// (or the daemon's next poll) applies them. A letter that a later event
    /// for its key superseded is refused: applying it would undo that event.
    #[command(
        after_help = "Examples:\n  synchost dlq retry acme/orders --all\n  synchost dlq retry acme/orders --id 12 --id 13"
    )]
    Retry {
        /// The event pipeline, as TENANT/PIPELINE.
        pipeline: PipelineId,
        #[command(flatten)]
        which: Which,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete dead letters for good.
    #[command(after_help = "Example:\n  synchost dlq drop acme/orders --id 12")]
    Drop {
        /// The event pipeline, as TENANT/PIPELINE.
        pipeline: PipelineId,
        #[command(flatten)]
        which: Which,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Which letters: `--id N` (repeatable) or `--all`; one of the two is required.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(super) struct Which {
    /// A dead letter's id, as `dlq list` shows it (repeatable).
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<i64>,
    /// Every dead letter of the pipeline.
    #[arg(long)]
    all: bool,
}

impl Which {
    fn ids(&self) -> Option<&[i64]> {
        (!self.all).then_some(self.ids.as_slice())
    }
}

impl DlqCommand {
    /// Whether the command was asked for JSON output.
    pub(super) fn json(&self) -> bool {
        match self {
            DlqCommand::List { json, .. } | DlqCommand::Retry { json, .. } | DlqCommand::Drop { json, .. } => *json,
        }
    }

    fn pipeline(&self) -> &PipelineId {
        match self {
            DlqCommand::List { pipeline, .. }
            | DlqCommand::Retry { pipeline, .. }
            | DlqCommand::Drop { pipeline, .. } => pipeline,
        }
    }
}

pub(super) fn run(config: &Path, command: DlqCommand) -> anyhow::Result<ExitCode> {
    event_pipeline(config, command.pipeline())?;
    let state = super::open_state(config)?;
    match command {
        DlqCommand::List { pipeline, json } => {
            let letters = state.dead_letters(&pipeline)?;
            list(&pipeline, &letters, json);
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Retry { pipeline, which, json } => {
            let ids = which.ids();
            unknown_ids(state.as_ref(), &pipeline, ids)?;
            let outcome = state.requeue_dead_letters(&pipeline, ids)?;
            if json {
                super::output::print_json(&outcome);
            } else {
                outln!("{pipeline}: {} dead letter(s) back in the retry queue, due now", outcome.requeued.len());
                for (id, reason) in &outcome.refused {
                    outln!("  not retried: {id}: {reason}");
                }
            }
            Ok(if outcome.refused.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        DlqCommand::Drop { pipeline, which, json } => {
            let ids = which.ids();
            unknown_ids(state.as_ref(), &pipeline, ids)?;
            let dropped = state.drop_dead_letters(&pipeline, ids)?;
            if json {
                super::output::print_json(&serde_json::json!({ "dropped": dropped }));
            } else {
                outln!("{pipeline}: {dropped} dead letter(s) dropped");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Refuses a pipeline that has no dead letters to speak of: one no tenant
/// file has, or a diff pipeline (whose failures the next run plans again).
/// A tenant file that does not load is no reason to refuse: its letters are
/// still in the state.
fn event_pipeline(config: &Path, id: &PipelineId) -> anyhow::Result<()> {
    let (loaded, _) = crate::config::Config::load_each(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(tenant) = loaded.tenant(&id.tenant) else { return Ok(()) };
    match tenant.pipelines.get(&id.pipeline) {
        None => anyhow::bail!(
            "tenant `{}` has no pipeline `{}` (it has: {})",
            id.tenant,
            id.pipeline,
            tenant.pipelines.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        Some(pipeline) if pipeline.mode == crate::config::Mode::Diff => anyhow::bail!(
            "{id} is a diff pipeline: dead letters belong to event pipelines (what a diff run could not apply is \
             planned again by its next run; see `synchost runs show RUN`)"
        ),
        Some(_) => Ok(()),
    }
}

/// Refuses ids the pipeline has no letter for, before anything changes: a
/// typo must not half-apply a command.
fn unknown_ids(state: &dyn StateStore, pipeline: &PipelineId, ids: Option<&[i64]>) -> anyhow::Result<()> {
    let Some(ids) = ids else { return Ok(()) };
    let letters = state.dead_letters(pipeline)?;
    let unknown: Vec<String> =
        ids.iter().filter(|id| !letters.iter().any(|l| l.id == **id)).map(|id| id.to_string()).collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{pipeline} has no dead letter with id {} (see `synchost dlq list {pipeline}`)",
            unknown.join(", ")
        )
    }
}

fn list(pipeline: &PipelineId, letters: &[DeadLetter], json: bool) {
    if json {
        super::output::print_json(&letters);
        return;
    }
    if letters.is_empty() {
        outln!("{pipeline}: no dead letters");
        return;
    }
    for letter in letters {
        let superseded =
            letter.superseded_by.as_ref().map(|p| format!(" (superseded by the event at {p})")).unwrap_or_default();
        outln!(
            "{:>6}  key {}  at {}  run {}  {}{superseded}",
            letter.id,
            letter.key,
            letter.position,
            letter.run,
            letter.created_at
        );
        outln!("        reason:    {}", letter.reason);
        outln!("        operation: {}", letter.operation);
    }
}
