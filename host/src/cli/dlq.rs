//! `synchost dlq`: an event pipeline's dead letters — list them, put them back
//! into the retry queue, or drop them. Retry and drop act on the letters named
//! with `--id` (repeatable) or on all of them with `--all`, never on an
//! implicit "everything", since dropping a letter loses the operation for good.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::state::{DeadLetter, PipelineId, StateStore};

#[derive(Subcommand)]
pub(super) enum DlqCommand {
    /// The pipeline's dead letters, oldest first, with reason and operation.
    List {
        /// The pipeline, as TENANT/PIPELINE.
        pipeline: PipelineId,
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back into the retry queue, due now: the next sync
    /// (or the daemon's next poll) applies them. A letter that a later event
    /// for its key superseded is refused: applying it would undo that event.
    Retry {
        pipeline: PipelineId,
        #[command(flatten)]
        which: Which,
        #[arg(long)]
        json: bool,
    },
    /// Delete dead letters for good.
    Drop {
        pipeline: PipelineId,
        #[command(flatten)]
        which: Which,
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

pub(super) fn run(config: &Path, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let state = super::open_state(config)?;
    match command {
        DlqCommand::List { pipeline, json } => {
            let letters = state.dead_letters(&pipeline)?;
            list(&pipeline, &letters, json);
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Retry { pipeline, which, json } => {
            let ids = which.ids();
            unknown_ids(&state, &pipeline, ids)?;
            let outcome = state.requeue_dead_letters(&pipeline, ids)?;
            if json {
                super::output::print_json(&outcome);
            } else {
                println!("{pipeline}: {} dead letter(s) back in the retry queue, due now", outcome.requeued.len());
                for (id, reason) in &outcome.refused {
                    println!("  not retried: {id}: {reason}");
                }
            }
            Ok(if outcome.refused.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        DlqCommand::Drop { pipeline, which, json } => {
            let ids = which.ids();
            unknown_ids(&state, &pipeline, ids)?;
            let dropped = state.drop_dead_letters(&pipeline, ids)?;
            if json {
                super::output::print_json(&serde_json::json!({ "dropped": dropped }));
            } else {
                println!("{pipeline}: {dropped} dead letter(s) dropped");
            }
            Ok(ExitCode::SUCCESS)
        }
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
        println!("{pipeline}: no dead letters");
        return;
    }
    for letter in letters {
        let superseded =
            letter.superseded_by.as_ref().map(|p| format!(" (superseded by the event at {p})")).unwrap_or_default();
        println!(
            "{:>6}  key {}  at {}  run {}  {}{superseded}",
            letter.id, letter.key, letter.position, letter.run, letter.created_at
        );
        println!("        reason:    {}", letter.reason);
        println!("        operation: {}", letter.operation);
    }
}
