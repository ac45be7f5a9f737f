//! Running one sync of one pipeline: a diff sync ([`diff`]) or an event sync
//! ([`event`]). Both record the run in the state store, with the digests of the
//! plugins they used, and both stop at the next safe point when asked to.

mod diff;
mod event;
mod values;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::config::{Mode, PipelineConfig, TenantConfig};
use crate::plugin::types::{Row, RowBatch};
use crate::plugin::{
    CompiledPlugin, DestinationInstance, PluginEngine, PluginError, PluginSetup, SourceInstance, TransformInstance,
};
use crate::state::{PipelineId, RunId, RunStats, RunStatus, StateError, StateStore};
pub use values::{row_to_json, value_to_json};

/// What one sync did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub run: RunId,
    pub pipeline: PipelineId,
    pub mode: Mode,
    pub status: RunStatus,
    pub stats: RunStats,
    /// Why the run failed, or stopped short.
    pub error: Option<String>,
    /// Operations that did not apply: (key, reason), the first few.
    pub failures: Vec<(String, String)>,
}

/// Limits on one sync, from the CLI.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Event syncs: stop after this many batches even if more events wait.
    pub max_batches: Option<u64>,
    /// Event syncs: drop the record of a run that found nothing to do, so that
    /// a daemon polling every second does not fill the run history.
    pub forget_idle_runs: bool,
}

/// Everything one sync needs.
pub struct SyncJob<'a> {
    pub engine: &'a PluginEngine,
    pub state: &'a dyn StateStore,
    pub tenant: &'a TenantConfig,
    pub pipeline: &'a PipelineConfig,
    /// The compiled plugins of the tenant, by name.
    pub plugins: &'a BTreeMap<String, Arc<CompiledPlugin>>,
    /// Set by a shutdown: stop at the next batch boundary.
    pub stop: &'a AtomicBool,
    pub options: SyncOptions,
}

/// Why a run stopped before its end; recorded with the run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Halt {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("{0}")]
    Refused(String),
    #[error("stopped by shutdown")]
    Stopped,
}

/// How many failed operations a report lists.
const REPORTED_FAILURES: usize = 20;

/// The running record of a sync, filled in by the engines.
pub(crate) struct Progress {
    pub stats: RunStats,
    pub failures: Vec<(String, String)>,
}

impl Progress {
    fn failure(&mut self, key: &str, reason: String) {
        if self.failures.len() < REPORTED_FAILURES {
            self.failures.push((key.to_string(), reason));
        }
    }
}

impl SyncJob<'_> {
    pub fn id(&self) -> PipelineId {
        PipelineId::new(&self.tenant.name, &self.pipeline.name)
    }

    /// Runs the sync to its end, or to the first thing that stops it. Only a
    /// failure of the state store itself is an `Err`: anything else is a run
    /// that failed, recorded and reported.
    pub fn run(&self) -> Result<SyncReport, StateError> {
        let id = self.id();
        let digests = self.plugin_names().map(|name| (name.to_string(), self.plugins[name].digest.clone())).collect();
        let run = self.state.start_run(&id, self.pipeline.mode, &digests)?;
        let mut progress = Progress { stats: RunStats::default(), failures: Vec::new() };
        let outcome = match self.pipeline.mode {
            Mode::Diff => diff::run(self, run, &mut progress),
            Mode::Event => event::run(self, run, &mut progress),
        };
        let (status, error) = match outcome {
            Ok(()) => (RunStatus::Succeeded, None),
            Err(Halt::Stopped) => (RunStatus::Stopped, Some(Halt::Stopped.to_string())),
            Err(Halt::Plugin(PluginError::Returned { error, .. }))
                if matches!(error, crate::plugin::WitError::Transient(_)) =>
            {
                (RunStatus::Failed, Some(format!("{}; the next run tries again", crate::plugin::describe(&error))))
            }
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        let idle = status == RunStatus::Succeeded && progress.stats.read == 0 && progress.stats.batches == 0;
        if idle && self.pipeline.mode == Mode::Event && self.options.forget_idle_runs {
            self.state.forget_run(run)?;
        } else {
            self.state.finish_run(run, status, &progress.stats, error.as_deref())?;
        }
        Ok(SyncReport {
            run,
            pipeline: id,
            mode: self.pipeline.mode,
            status,
            stats: progress.stats,
            error,
            failures: progress.failures,
        })
    }

    fn plugin_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.pipeline.source.as_str())
            .chain(self.pipeline.transforms.iter().map(String::as_str))
            .chain(std::iter::once(self.pipeline.destination.as_str()))
    }

    fn setup(&self, plugin: &str) -> PluginSetup {
        PluginSetup::from_config(&self.tenant.name, &self.tenant.plugins[plugin])
    }

    pub(crate) fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn source(&self) -> Result<SourceInstance, PluginError> {
        let name = &self.pipeline.source;
        SourceInstance::new(self.engine, &self.plugins[name], &self.setup(name))
    }

    pub(crate) fn destination(&self) -> Result<DestinationInstance, PluginError> {
        let name = &self.pipeline.destination;
        DestinationInstance::new(self.engine, &self.plugins[name], &self.setup(name))
    }

    pub(crate) fn transforms(&self) -> Result<TransformChain, PluginError> {
        let stages = self
            .pipeline
            .transforms
            .iter()
            .map(|name| TransformInstance::new(self.engine, &self.plugins[name], &self.setup(name)))
            .collect::<Result<_, _>>()?;
        Ok(TransformChain { stages })
    }
}

/// The pipeline's transforms, applied in order.
pub(crate) struct TransformChain {
    stages: Vec<TransformInstance>,
}

/// Rows that came out of the transforms.
pub(crate) struct TransformedRows {
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    /// For each row, the index of the input row it came from.
    pub origins: Vec<u32>,
}

impl TransformChain {
    /// Runs a batch through every stage.
    pub(crate) fn apply(&mut self, columns: Vec<String>, rows: Vec<Row>) -> Result<TransformedRows, PluginError> {
        let mut origins: Vec<u32> = (0..rows.len() as u32).collect();
        let mut batch = RowBatch { columns, rows };
        for stage in &mut self.stages {
            let out = stage.transform(&batch)?;
            origins = out.origins.iter().map(|&o| origins[o as usize]).collect();
            batch = RowBatch { columns: out.columns, rows: out.rows };
        }
        Ok(TransformedRows { columns: batch.columns, rows: batch.rows, origins })
    }
}
