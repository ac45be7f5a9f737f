//! Running one sync of one pipeline: a diff sync ([`diff`]) or an event sync
//! ([`event`]). Both record the run in the state store, with the digests of the
//! plugins they used, and both stop at the next safe point when asked to.

mod apply;
pub mod diff;
mod event;
pub mod events;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Mode, PipelineConfig, TenantConfig};
use crate::plugin::{
    CompiledPlugin, DestinationInstance, Fence, PluginEngine, PluginError, PluginSetup, SourceInstance,
    TransformInstance,
};
use crate::state::{Lease, LeaseAnswer, PipelineId, RunId, RunStats, RunStatus, StateError, StateStore};
pub(crate) use event::operation_from_json;
pub use events::{Observer, SyncEvent};
use synchost_model::Table;

/// What one sync did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
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
    /// The run ended at a batch boundary because a newer version of its
    /// plugins became active; the next run goes on from its cursor at once.
    pub handed_over: bool,
    /// The host that ran it (its `host_id`, or `command:…` for a one-off
    /// command).
    #[serde(default)]
    pub host: String,
}

/// Limits on one sync, from the CLI.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Event syncs: stop after this many batches even if more events wait.
    pub max_batches: Option<u64>,
    /// Event syncs: drop the record of a run that found nothing to do, so that
    /// a daemon polling every second does not fill the run history.
    pub forget_idle_runs: bool,
    /// Diff syncs: apply a plan even if a guard would block it, this once.
    pub force: bool,
}

/// Everything one sync needs. The tenant's config and plugins are the
/// version that was active when the job was made, kept to its end.
pub struct SyncJob<'a> {
    pub engine: &'a PluginEngine,
    pub state: &'a dyn StateStore,
    pub tenant: Arc<TenantConfig>,
    pub pipeline: PipelineConfig,
    /// The compiled plugins of the tenant, by name.
    pub plugins: Arc<BTreeMap<String, Arc<CompiledPlugin>>>,
    /// Set by a shutdown: stop at the next batch boundary.
    pub stop: &'a AtomicBool,
    /// Who this process is to the pipeline's lease (see [`Lease`]), and how
    /// long a lease lasts unless renewed.
    pub holder: &'a str,
    pub lease_time: Duration,
    /// Whether the job still holds its pipeline's lease (see [`LeaseWatch`]).
    pub lease: LeaseWatch,
    /// Set when a newer version of the tenant's plugins became active: an
    /// event sync hands over at its next batch boundary.
    pub superseded: Arc<AtomicBool>,
    pub options: SyncOptions,
    /// The host's state directory, under which run archives are kept.
    pub state_dir: &'a Path,
    /// How many diff-run archives to keep for the pipeline.
    pub keep_run_archives: usize,
    /// Hears what the job does as it goes (see [`events`]).
    pub observer: Observer,
}

/// Why a sync command could not be carried out. A run that fails is not one
/// of these: it is recorded and reported in its [`SyncReport`].
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no tenant `{0}` is loaded")]
    NoTenant(String),
    #[error("tenant `{tenant}` has no pipeline `{pipeline}` (it has: {})", known.join(", "))]
    NoPipeline { tenant: String, pipeline: String, known: Vec<String> },
    #[error("no run {0}")]
    NoRun(RunId),
    #[error("run {run} is not a diff or reconcile run of {pipeline}")]
    NotThisPipeline { run: RunId, pipeline: PipelineId },
    #[error("run {run} is not blocked (it is {status}); only a blocked plan can be approved")]
    NotBlocked { run: RunId, status: RunStatus },
    #[error("{0} is an event pipeline; only diff pipelines plan (`synchost reconcile {0} --plan` shows its drift)")]
    NotDiff(PipelineId),
    #[error("{0} is a diff pipeline: every run of it reconciles (`synchost sync`, `synchost plan`)")]
    NotEvent(PipelineId),
    #[error("run {0} is an event run; only diff and reconcile runs can be replayed")]
    EventRun(RunId),
    /// Another host or command runs the pipeline now.
    #[error(
        "{} is being run by `{}` (lease token {}, for {} more unless renewed); try again when it is done",
        .0.pipeline, .0.holder, .0.token, lease_left(.0)
    )]
    Leased(Lease),
    /// Mid-rollout: the pipeline runs on another version of its tenant,
    /// which other hosts still serve.
    #[error(
        "{pipeline} runs on version {} of its tenant, which {} still serve(s); this host has version {} and \
         waits until they move on",
        &recorded[..recorded.len().min(12)], hosts.join(", "), &mine[..mine.len().min(12)]
    )]
    Rollout { pipeline: PipelineId, recorded: String, mine: String, hosts: Vec<String> },
    /// The work itself stopped: a plugin failed, the destination changed…
    #[error(transparent)]
    Halted(#[from] Halt),
}

/// Whether a job may still write, by what it knows of its lease without
/// asking the store: not if a renewal found the lease taken by another
/// holder, nor once the lease would have ended since the last renewal that
/// went through, by this process's monotonic clock. A process that stalled
/// past its lease (SIGSTOP, a paused VM, a long GC-like hang) finds the
/// second true the moment it resumes, before its renewal thread has run, and
/// sends nothing more to the destination. The state store refuses its writes
/// in any case (fencing); this keeps its destination writes from landing
/// after the new holder's too, but for one already on its way at the stall.
#[derive(Debug)]
pub struct LeaseWatch {
    started: Instant,
    /// Milliseconds after `started` until which the lease surely holds; 0
    /// once it is known lost. `u64::MAX` before the lease is taken.
    holds_until_ms: std::sync::atomic::AtomicU64,
    /// The lease's fencing token once granted; 0 before.
    token: std::sync::atomic::AtomicU64,
}

impl Default for LeaseWatch {
    fn default() -> LeaseWatch {
        LeaseWatch {
            started: Instant::now(),
            holds_until_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            token: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl LeaseWatch {
    /// The lease was granted, with `token`.
    fn granted(&self, token: u64) {
        self.token.store(token, Ordering::Relaxed);
    }

    /// The fencing token of the lease, once granted.
    fn token(&self) -> Option<u64> {
        Some(self.token.load(Ordering::Relaxed)).filter(|&token| token > 0)
    }

    /// The lease was granted or renewed by a request sent at `asked`, for
    /// `ttl`: it holds at least until `asked + ttl` (the store dates it from
    /// when it got the request, later), less a tenth for clock-rate drift.
    fn renewed(&self, asked: Instant, ttl: Duration) {
        let until = asked.saturating_duration_since(self.started) + ttl - ttl / 10;
        self.holds_until_ms.store(until.as_millis() as u64, Ordering::Relaxed);
    }

    fn lost(&self) {
        self.holds_until_ms.store(0, Ordering::Relaxed);
    }

    /// Whether the job may still write.
    pub(crate) fn holds(&self) -> bool {
        (self.started.elapsed().as_millis() as u64) < self.holds_until_ms.load(Ordering::Relaxed)
    }
}

/// How long `lease` lasts from now unless renewed, as people read it.
fn lease_left(lease: &Lease) -> String {
    let left = lease.expires_at_ms - chrono::Utc::now().timestamp_millis();
    humantime::format_duration(Duration::from_secs(left.max(0) as u64 / 1000)).to_string()
}

/// Why a run stopped before its end; recorded with the run.
#[derive(Debug, thiserror::Error)]
pub enum Halt {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The state store failed: what the run did since its last commit is
    /// done again by the next run.
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Refused(String),
    #[error("stopped at a batch boundary by a shutdown or Ctrl-C; what was committed stays")]
    Stopped,
    /// The pipeline's lease ended or passed to another holder: nothing more
    /// is sent to the destination or committed.
    #[error("stopped: the pipeline's lease ended or passed to another host; what was committed stays")]
    LeaseLost,
    /// Event syncs: a newer version of the plugins is active; the run ends
    /// after its last committed batch and the next one carries on.
    #[error("handed over to a new plugin version")]
    HandedOver,
    /// A guard held the plan back for an operator.
    #[error("blocked: {0}")]
    Blocked(String),
    /// Diff syncs: the plan is the one this earlier run made and is still
    /// waiting for approval; this run leaves no record of its own.
    #[error("still blocked: the plan is the one run {0} made; approve it with `synchost approve {0}`")]
    StillBlocked(RunId),
    /// Event syncs: a config error; nothing of the batch was committed and an
    /// operator must act before the pipeline runs again.
    #[error("paused: {0}")]
    Paused(String),
    #[error(transparent)]
    Archive(#[from] diff::archive::ArchiveError),
    /// The run went past one of its pipeline's run budgets. A diff run plans
    /// nothing from it (it failed); an event run keeps what it committed and
    /// the next run goes on from its cursor (it stopped).
    #[error("{}", .0.detail)]
    OverBudget(BudgetBreach),
}

/// Which run budget a run went past, and how it reads in the run's error.
#[derive(Debug)]
pub struct BudgetBreach {
    /// `max_run_rows`, `max_run_duration` or `max_run_memory`.
    pub key: &'static str,
    pub detail: String,
}

/// A plan that cannot be made (a key twice, an owned field missing) refuses the run.
impl From<diff::PlanError> for Halt {
    fn from(error: diff::PlanError) -> Halt {
        Halt::Refused(error.to_string())
    }
}

/// A run held to its pipeline's budget (`max_run_rows`, `max_run_duration`,
/// `max_run_memory`), checked at every page and batch boundary.
#[derive(Clone)]
pub(crate) struct Budget {
    budget: crate::config::RunBudget,
    pipeline: String,
    started: Instant,
}

impl Budget {
    fn start(job: &SyncJob<'_>) -> Budget {
        Budget { budget: job.pipeline.budget, pipeline: job.pipeline.name.clone(), started: Instant::now() }
    }

    fn over(&self, key: &'static str, what: String) -> Halt {
        Halt::OverBudget(BudgetBreach {
            key,
            detail: format!(
                "the run {what}: over its {key} (raise `pipelines.{}.{key}`, or the default in synchost.toml's [limits])",
                self.pipeline
            ),
        })
    }

    /// `rows` read so far, of `what` (source rows, destination records, events).
    pub(crate) fn rows(&self, rows: u64, what: &str) -> Result<(), Halt> {
        let max = self.budget.max_rows;
        if rows > max { Err(self.over("max_run_rows", format!("read more than {max} {what}"))) } else { Ok(()) }
    }

    pub(crate) fn time(&self) -> Result<(), Halt> {
        let max = self.budget.max_duration;
        if self.started.elapsed() > max {
            Err(self.over("max_run_duration", format!("took longer than {}", humantime::format_duration(max))))
        } else {
            Ok(())
        }
    }

    /// `bytes`: what the plan holds so far, estimated.
    pub(crate) fn memory(&self, bytes: u64) -> Result<(), Halt> {
        let max = self.budget.max_memory_bytes;
        if bytes > max {
            let max = bytesize::ByteSize::b(max);
            Err(self.over("max_run_memory", format!("would hold more than {max} for its plan")))
        } else {
            Ok(())
        }
    }
}

/// How many failed operations a report lists.
const REPORTED_FAILURES: usize = 20;

/// The running record of a sync, filled in by the engines, which also tells
/// the job's observer how the run goes.
pub(crate) struct Progress {
    pub stats: RunStats,
    pub failures: Vec<(String, String)>,
    /// What the run may still take, from its start.
    pub budget: Budget,
    pipeline: PipelineId,
    /// `None` for a preview, which records no run.
    run: Option<RunId>,
    observer: Observer,
}

impl Progress {
    fn new(job: &SyncJob<'_>, run: Option<RunId>) -> Progress {
        Progress {
            stats: RunStats::default(),
            failures: Vec::new(),
            budget: Budget::start(job),
            pipeline: job.id(),
            run,
            observer: job.observer.clone(),
        }
    }

    fn failure(&mut self, key: &str, reason: String) {
        if self.failures.len() < REPORTED_FAILURES {
            self.failures.push((key.to_string(), reason));
        }
    }

    /// Tells the observer that a page was read.
    fn page_read(&self) {
        (self.observer)(&SyncEvent::PageRead { pipeline: &self.pipeline, run: self.run, stats: &self.stats });
    }

    /// Tells the observer that `done` operations of `total` were applied.
    fn batch_applied(&self, done: u64, total: Option<u64>) {
        let event =
            SyncEvent::BatchApplied { pipeline: &self.pipeline, run: self.run, done, total, stats: &self.stats };
        (self.observer)(&event);
    }

    /// Tells the observer that an event batch of `run` was committed.
    fn batch_committed(&self, run: RunId, seconds: f64) {
        (self.observer)(&SyncEvent::BatchCommitted { pipeline: &self.pipeline, run, seconds });
    }

    /// Records how long a phase took, in milliseconds.
    fn timing(&mut self, phase: &str, started: Instant) {
        self.stats.timings_ms.insert(phase.to_string(), started.elapsed().as_millis() as u64);
    }
}

impl SyncJob<'_> {
    pub fn id(&self) -> PipelineId {
        PipelineId::new(&self.tenant.name, &self.pipeline.name)
    }

    /// Runs the sync to its end, or to the first thing that stops it. Only a
    /// failure of the state store itself is an `Err`: anything else is a run
    /// that failed, recorded and reported.
    pub fn run(&self) -> Result<SyncReport, SyncError> {
        self.run_as(self.pipeline.mode, |run, progress| match self.pipeline.mode {
            Mode::Diff => diff::run(self, run, progress),
            Mode::Event => event::run(self, run, progress),
            Mode::Reconcile => unreachable!("no pipeline has the mode `reconcile`: its config is refused"),
        })
    }

    /// Reconciles an event pipeline against a diff of its source's snapshot,
    /// as its `reconcile` schedule does (see [`diff::reconcile`]): a run of
    /// its own kind, between event runs.
    pub fn reconcile(&self) -> Result<SyncReport, SyncError> {
        if self.pipeline.mode != Mode::Event {
            return Err(SyncError::NotEvent(self.id()));
        }
        self.run_as(Mode::Reconcile, |run, progress| diff::reconcile::run(self, run, progress))
    }

    /// Takes the pipeline's lease and does `work` as a new run of kind
    /// `kind`, recorded from its start to how it ended.
    fn run_as(
        &self,
        kind: Mode,
        work: impl FnOnce(RunId, &mut Progress) -> Result<(), Halt>,
    ) -> Result<SyncReport, SyncError> {
        let id = self.id();
        let lease = self.take_lease()?;
        self.holding(&lease, || {
            let run = self.state.start_run(&lease, kind, &self.digests())?;
            let from = RunStats::default();
            (self.observer)(&SyncEvent::RunStarted { pipeline: &id, run, mode: kind, from: &from });
            Ok(self.record(run, kind, |progress| work(run, progress))?)
        })
    }

    /// What a reconciliation would find and repair now, writing nothing:
    /// what `synchost reconcile --plan` shows. It holds the lease while it
    /// reads, so that no event batch applies between its watermarks.
    pub fn reconcile_preview(&self) -> Result<diff::reconcile::ReconcilePreview, SyncError> {
        if self.pipeline.mode != Mode::Event {
            return Err(SyncError::NotEvent(self.id()));
        }
        let lease = self.take_lease()?;
        self.holding(&lease, || {
            let mut progress = Progress::new(self, None);
            Ok(diff::reconcile::preview(self, &mut progress)?)
        })
    }

    /// Applies the plan that a guard blocked in diff run `run`, provided the
    /// destination has not changed since. The run record is that run's.
    pub fn approve(&self, run: RunId) -> Result<SyncReport, SyncError> {
        let record = self.state.run(run)?.ok_or(SyncError::NoRun(run))?;
        if record.pipeline != self.id() || record.mode == Mode::Event {
            return Err(SyncError::NotThisPipeline { run, pipeline: self.id() });
        }
        if record.status != RunStatus::Blocked {
            return Err(SyncError::NotBlocked { run, status: record.status });
        }
        let lease = self.take_lease()?;
        self.holding(&lease, || {
            // The destination is checked before the run is touched: a refusal
            // leaves the blocked run as it was. The check reads the destination
            // once, and the apply goes on with what it read.
            let mut progress = Progress::new(self, Some(run));
            let id = self.id();
            if record.mode == Mode::Reconcile {
                let approvable = diff::reconcile::approvable(self, run, &mut progress)?;
                self.state.restart_run(run, &lease)?;
                (self.observer)(&SyncEvent::RunStarted { pipeline: &id, run, mode: record.mode, from: &record.stats });
                // The run counts what the new survey read.
                let surveyed = std::mem::take(&mut progress.stats);
                let approve = |progress: &mut Progress| {
                    progress.stats = surveyed;
                    diff::reconcile::approve(self, run, approvable, progress)
                };
                return Ok(self.record(run, Mode::Reconcile, approve)?);
            }
            let approvable = diff::approvable(self, run, &mut progress)?;
            self.state.restart_run(run, &lease)?;
            (self.observer)(&SyncEvent::RunStarted { pipeline: &id, run, mode: Mode::Diff, from: &record.stats });
            // The run keeps what its planning counted (rows read, desired...).
            let report = self.record(run, Mode::Diff, |progress| {
                progress.stats = record.stats.clone();
                diff::approve(self, run, approvable, progress)
            })?;
            Ok(report)
        })
    }

    /// Plans without writing anything: what `synchost plan` shows.
    pub fn preview(&self) -> Result<diff::Preview, SyncError> {
        if self.pipeline.mode != Mode::Diff {
            return Err(SyncError::NotDiff(self.id()));
        }
        let mut progress = Progress::new(self, None);
        Ok(diff::preview(self, &mut progress)?)
    }

    /// Recomputes the plan of diff run `run` from its archive with this job's
    /// plugins, and compares it with the recorded plan.
    pub fn replay(&self, run: RunId) -> Result<diff::ReplayReport, SyncError> {
        let record = self.state.run(run)?.ok_or(SyncError::NoRun(run))?;
        if record.mode == Mode::Event {
            return Err(SyncError::EventRun(run));
        }
        Ok(diff::replay(self, run)?)
    }

    /// Runs `work` as run `run`, of kind `kind`, and records how it ended.
    fn record(
        &self,
        run: RunId,
        kind: Mode,
        work: impl FnOnce(&mut Progress) -> Result<(), Halt>,
    ) -> Result<SyncReport, StateError> {
        let id = self.id();
        let mut progress = Progress::new(self, Some(run));
        let outcome = work(&mut progress);
        self.tell_halt(run, &id, &outcome);
        let handed_over = matches!(outcome, Err(Halt::HandedOver));
        let waiting = match &outcome {
            Err(Halt::StillBlocked(waiting)) => Some(*waiting),
            _ => None,
        };
        let (status, error) = match outcome {
            Ok(()) | Err(Halt::HandedOver) => match self.did_not_apply(kind, &progress.stats) {
                None => (RunStatus::Succeeded, None),
                Some(summary) => (RunStatus::SucceededWithErrors, Some(summary)),
            },
            Err(Halt::Stopped) => (RunStatus::Stopped, Some(Halt::Stopped.to_string())),
            Err(Halt::LeaseLost) => (RunStatus::Stopped, Some(Halt::LeaseLost.to_string())),
            Err(Halt::OverBudget(breach)) if kind == Mode::Event => {
                (RunStatus::Stopped, Some(format!("{}; the next run goes on from its cursor", breach.detail)))
            }
            Err(Halt::Blocked(reason)) => (RunStatus::Blocked, Some(reason)),
            Err(e @ Halt::StillBlocked(_)) => (RunStatus::Blocked, Some(e.to_string())),
            Err(Halt::Paused(reason)) => (RunStatus::Paused, Some(reason)),
            Err(Halt::Plugin(PluginError::Returned { error, .. }))
                if matches!(error, crate::plugin::WitError::Transient(_)) =>
            {
                (RunStatus::Failed, Some(format!("{error}; the next run tries again")))
            }
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        let idle = status == RunStatus::Succeeded && progress.stats.read == 0 && progress.stats.batches == 0;
        // A run that found the plan already waiting reports that run instead.
        let reported_run = waiting.unwrap_or(run);
        if waiting.is_some() || (idle && kind == Mode::Event && self.options.forget_idle_runs) {
            self.state.forget_run(run)?;
        } else {
            self.state.finish_run(run, status, &progress.stats, error.as_deref())?;
        }
        let finished = SyncEvent::RunFinished {
            pipeline: &id,
            run,
            status,
            stats: &progress.stats,
            error: error.as_deref(),
            handed_over,
        };
        (self.observer)(&finished);
        Ok(SyncReport {
            run: reported_run,
            pipeline: id,
            mode: kind,
            status,
            stats: std::mem::take(&mut progress.stats),
            error,
            failures: std::mem::take(&mut progress.failures),
            handed_over,
            host: self.holder.to_string(),
        })
    }

    /// What of a run that went to its end did not apply, if anything: items
    /// rejected, dead-lettered, or (diff runs) given up after their attempts.
    fn did_not_apply(&self, kind: Mode, stats: &RunStats) -> Option<String> {
        let mut parts = Vec::new();
        if stats.rejected > 0 {
            parts.push(format!("{} rejected", stats.rejected));
        }
        match kind {
            Mode::Event if stats.dead_lettered > 0 => {
                parts.push(format!("{} dead-lettered (see `synchost dlq list {}`)", stats.dead_lettered, self.id()))
            }
            Mode::Diff | Mode::Reconcile if stats.failed > 0 => {
                parts.push(format!("{} gave up after their attempts (the next run plans them again)", stats.failed))
            }
            _ => {}
        }
        (!parts.is_empty()).then(|| format!("some operations did not apply: {}", parts.join(", ")))
    }

    /// Tells the observer of the halts it hears about on their own: a plan
    /// held back, a limit breached.
    fn tell_halt(&self, run: RunId, id: &PipelineId, outcome: &Result<(), Halt>) {
        let run = Some(run);
        match outcome {
            Err(Halt::Blocked(reason)) => (self.observer)(&SyncEvent::PlanBlocked { pipeline: id, run, reason }),
            Err(Halt::OverBudget(breach)) => {
                let event = SyncEvent::LimitBreached { pipeline: id, run, limit: breach.key, detail: &breach.detail };
                (self.observer)(&event)
            }
            Err(Halt::Plugin(error @ PluginError::LimitExceeded { limit, .. })) => {
                let detail = error.to_string();
                (self.observer)(&SyncEvent::LimitBreached { pipeline: id, run, limit, detail: &detail })
            }
            _ => {}
        }
    }

    /// Plugin name → sha256 of every plugin the pipeline uses.
    pub(crate) fn digests(&self) -> BTreeMap<String, String> {
        self.plugin_names().map(|name| (name.to_string(), self.plugins[name].digest.clone())).collect()
    }

    pub(crate) fn staging_dir(&self, run: RunId) -> PathBuf {
        diff::archive::staging_dir(self.state_dir, run)
    }

    fn plugin_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.pipeline.source.as_str())
            .chain(self.pipeline.transforms.iter().map(String::as_str))
            .chain(std::iter::once(self.pipeline.destination.as_str()))
    }

    /// What the tenant grants `plugin`, and the run's lease, which a
    /// destination may use to refuse writes of a run whose lease has passed
    /// on (see `host.run-fence` in `wit/host.wit`).
    fn setup(&self, plugin: &str) -> PluginSetup {
        let mut setup = PluginSetup::from_config(&self.tenant.name, &self.tenant.plugins[plugin]);
        setup.fence =
            self.lease.token().map(|token| Fence { scope: format!("{}/{}", self.state.identity(), self.id()), token });
        setup
    }

    pub(crate) fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || !self.lease.holds()
    }

    /// Takes the pipeline's lease for this job, or says who holds it, or why
    /// it waits for a rollout (see [`SyncJob::check_rollout`]).
    fn take_lease(&self) -> Result<Lease, SyncError> {
        let version = self.tenant.version_digest.as_str();
        self.check_rollout(version)?;
        let asked = Instant::now();
        match self.state.acquire_lease(&self.id(), self.holder, self.lease_time, Some(version))? {
            LeaseAnswer::Granted(lease) => {
                self.lease.renewed(asked, self.lease_time);
                self.lease.granted(lease.token as u64);
                Ok(lease)
            }
            LeaseAnswer::HeldBy(lease) => Err(SyncError::Leased(lease)),
        }
    }

    /// Mid-rollout, while the hosts of a fleet serve different versions of
    /// the tenant, a pipeline stays on the version it last ran (its lease
    /// records it) as long as another live host still serves that version:
    /// this host, on another version (newer or older), leaves it to them
    /// rather than have the pipeline flap between versions. Once no other
    /// host serves the recorded version, the pipeline moves on.
    fn check_rollout(&self, mine: &str) -> Result<(), SyncError> {
        let id = self.id();
        let Some(recorded) = self.state.lease(&id)?.and_then(|lease| lease.version) else { return Ok(()) };
        if recorded == mine {
            return Ok(());
        }
        let hosts: Vec<String> = self
            .state
            .hosts()?
            .into_iter()
            .filter(|host| host.id != self.holder && host.versions.get(&id.tenant) == Some(&recorded))
            .map(|host| host.id)
            .collect();
        if hosts.is_empty() {
            return Ok(());
        }
        Err(SyncError::Rollout { pipeline: id, recorded, mine: mine.to_string(), hosts })
    }

    /// Runs `work` under `lease`, renewed every third of its time by a
    /// thread of its own, and releases it after. A lease found taken by
    /// another holder, or not renewed in time, stops the job (see
    /// [`LeaseWatch`]); a renewal that fails is tried again at the next tick,
    /// and until the lease ends nobody else can take it.
    fn holding<T>(&self, lease: &Lease, work: impl FnOnce() -> T) -> T {
        let done = (std::sync::Mutex::new(false), std::sync::Condvar::new());
        let (state, watch, every) = (self.state, &self.lease, self.lease_time / 3);
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut finished = done.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                loop {
                    finished = done.1.wait_timeout(finished, every).unwrap_or_else(|e| e.into_inner()).0;
                    if *finished {
                        return;
                    }
                    let asked = Instant::now();
                    match state.renew_lease(lease, self.lease_time) {
                        Ok(Some(_)) => watch.renewed(asked, self.lease_time),
                        Ok(None) => {
                            tracing::warn!(pipeline = %lease.pipeline, token = lease.token,
                                "the lease passed to another holder; stopping this run");
                            watch.lost();
                            return;
                        }
                        Err(e) => tracing::warn!(pipeline = %lease.pipeline, "cannot renew the lease: {e}"),
                    }
                }
            });
            let result = work();
            *done.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
            done.1.notify_all();
            result
        });
        if let Err(e) = self.state.release_lease(lease) {
            tracing::warn!(pipeline = %lease.pipeline, "cannot release the lease (it ends by itself): {e}");
        }
        result
    }

    pub(crate) fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Relaxed)
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
pub(crate) struct TransformedTable {
    pub table: Table,
    /// For each row, the index of the input row it came from.
    pub origins: Vec<u32>,
}

impl TransformChain {
    /// Runs a table through every stage.
    pub(crate) fn apply(&mut self, input: Table) -> Result<TransformedTable, PluginError> {
        let mut origins: Vec<u32> = (0..input.len() as u32).collect();
        let mut table = input;
        for stage in &mut self.stages {
            let out = stage.transform(&table)?;
            origins = out.origins.iter().map(|&o| origins[o as usize]).collect();
            table = out.rows;
        }
        Ok(TransformedTable { table, origins })
    }
}
