//! Diff sync: read the source (through the transforms) and the destination,
//! plan by key, check the guards, apply, and keep the run.
//!
//! Only the fields the sync owns are compared and written, so fields people
//! add to destination records by hand survive. A failed operation is carried
//! nowhere: the next run sees the difference again and repairs it.

mod apply;
pub mod archive;
mod plan;
pub mod reconcile;
mod replay;
mod summary;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use archive::{Archive, Meta, RowWriter};
pub use plan::{Conflict, DestinationIndex, HashedRows, Plan, PlanError, Planner};
pub use replay::{PlanCounts, ReplayDifference, ReplayReport};
pub use summary::{PlanSamples, PlanSummary, SampleKey, SampleRow, SummaryCounts};

use super::{Halt, Progress, SyncJob};
use crate::config::Deletes;
use crate::plugin::{DestinationInstance, SourceInstance};
use crate::state::{PermittedLoad, RunId, RunStatus};
use synchost_model::Page;

/// The streams a run archives as it reads.
struct Recorder {
    source: RowWriter,
    destination: RowWriter,
    desired: RowWriter,
}

impl Recorder {
    fn create(dir: &std::path::Path) -> Result<Recorder, Halt> {
        std::fs::create_dir_all(dir).map_err(|e| Halt::Refused(format!("cannot create `{}`: {e}", dir.display())))?;
        Ok(Recorder {
            source: RowWriter::create(dir.join(archive::SOURCE))?,
            destination: RowWriter::create(dir.join(archive::DESTINATION))?,
            desired: RowWriter::create(dir.join(archive::DESIRED))?,
        })
    }

    fn finish(self) -> Result<(), Halt> {
        self.source.finish()?;
        self.destination.finish()?;
        self.desired.finish()?;
        Ok(())
    }
}

/// Reads both sides and plans. The destination instance is handed back so the
/// plan can be applied through it.
///
/// Three threads share the work, each with its own plugin instance: one pages
/// through the destination into the index, one pages through the source, and
/// this one transforms the source pages and plans them. Transformed pages that
/// arrive before the index is complete wait in memory; the source thread runs
/// at most a few pages ahead of the transforms.
fn compute_plan(
    job: &SyncJob<'_>,
    recorder: Option<&mut Recorder>,
    progress: &mut Progress,
) -> Result<(Plan, DestinationInstance), Halt> {
    let policy = &job.pipeline.diff;
    let mut source = job.source()?;
    let mut transforms = job.transforms()?;
    let destination = job.destination()?;
    let (mut source_log, destination_log, mut desired_log) = match recorder {
        Some(r) => (Some(&mut r.source), Some(&mut r.destination), Some(&mut r.desired)),
        None => (None, None, None),
    };

    // The first page tells which fields the transforms emit, which are the
    // owned fields unless the pipeline names them.
    let started = Instant::now();
    let page = source.snapshot(None)?;
    progress.stats.read += page.rows.len() as u64;
    progress.budget.rows(progress.stats.read, "source rows")?;
    progress.page_read();
    if let Some(log) = source_log.as_deref_mut() {
        log.page(&page.rows)?;
    }
    let next = page.next;
    let first = transforms.apply(page.rows)?;
    if let Some(log) = desired_log.as_deref_mut() {
        log.page(&first.table)?;
    }
    let owned = policy.owned_fields.clone().unwrap_or_else(|| first.table.columns.clone());
    let first = HashedRows::new(&owned, first.table)?;

    // Set when any thread fails, so that the others stop early.
    let abandon = AtomicBool::new(false);
    // Destination records read so far, for the live progress line.
    let destination_read = AtomicU64::new(0);
    // The destination reader checks its side against the run budget: what
    // its index holds, with what planning holds meanwhile.
    let destination_budget = DestinationBudget {
        budget: progress.budget.clone(),
        planning_bytes: AtomicU64::new(0),
        index_bytes: AtomicU64::new(0),
    };
    let stopping = || job.should_stop() || abandon.load(Ordering::Relaxed);
    let (planner, destination) = std::thread::scope(|scope| -> Result<(Planner, DestinationInstance), Halt> {
        let reading_destination_budget = &destination_budget;
        let mut reading_destination = Some(scope.spawn(|| {
            read_destination(
                destination,
                &owned,
                destination_log,
                &stopping,
                &destination_read,
                reading_destination_budget,
            )
            .inspect_err(|_| abandon.store(true, Ordering::Relaxed))
        }));
        let (pages, arriving) = std::sync::mpsc::sync_channel::<Result<Page, Halt>>(4);
        scope.spawn(move || page_source(&mut source, next, source_log, &pages, &stopping));

        let mut destination = None;
        let mut join_destination = |handle: std::thread::ScopedJoinHandle<'_, _>| -> Result<DestinationIndex, Halt> {
            let (index, instance) = handle.join().expect("the destination reader does not panic")?;
            destination = Some(instance);
            Ok(index)
        };
        let result = (|| {
            let mut planning = Planning::Waiting(vec![first]);
            for page in arriving {
                if job.should_stop() {
                    return Err(Halt::Stopped);
                }
                let page = page?;
                progress.stats.read += page.rows.len() as u64;
                progress.stats.destination = destination_read.load(Ordering::Relaxed);
                progress.budget.rows(progress.stats.read, "source rows")?;
                progress.budget.time()?;
                progress.page_read();
                let out = transforms.apply(page.rows)?;
                if let Some(log) = desired_log.as_deref_mut() {
                    log.page(&out.table)?;
                }
                if matches!(planning, Planning::Waiting(_))
                    && reading_destination.as_ref().is_some_and(|t| t.is_finished())
                {
                    let index = join_destination(reading_destination.take().expect("not joined yet"))?;
                    planning = planning.ready(index, policy)?;
                }
                planning.add(HashedRows::new(&owned, out.table)?)?;
                let held = planning.approx_bytes();
                destination_budget.planning_bytes.store(held, Ordering::Relaxed);
                // Once planning is ready, the planner holds the index itself.
                let index = match planning {
                    Planning::Waiting(_) => destination_budget.index_bytes.load(Ordering::Relaxed),
                    Planning::Ready(_) => 0,
                };
                progress.budget.memory(held + index)?;
            }
            // The source thread says when it stopped short; a stop that came
            // after its last page still makes this read no plan.
            if job.should_stop() {
                return Err(Halt::Stopped);
            }
            if let Some(handle) = reading_destination.take() {
                planning = planning.ready(join_destination(handle)?, policy)?;
            }
            planning.into_planner()
        })();
        if result.is_err() {
            abandon.store(true, Ordering::Relaxed);
        }
        let planner = result?;
        Ok((planner, destination.expect("the destination reader was joined")))
    })?;
    progress.stats.destination = planner.destination_rows();
    progress.timing("read", started);
    Ok((finish_plan(job, planner, progress)?, destination))
}

/// Pages through the source after its first page (`next` is the token the
/// first page gave), sending each page to planning.
fn page_source(
    source: &mut SourceInstance,
    next: Option<String>,
    mut log: Option<&mut RowWriter>,
    pages: &std::sync::mpsc::SyncSender<Result<Page, Halt>>,
    stopping: &dyn Fn() -> bool,
) {
    let mut token = next;
    while let Some(current) = token.take() {
        if stopping() {
            // Say so rather than just end: a channel that closes reads as the
            // end of the snapshot, and a plan made from a cut-short read
            // would delete what the source still has.
            let _ = pages.send(Err(Halt::Stopped));
            return;
        }
        let page = source.snapshot(Some(&current)).map_err(Halt::from).and_then(|page| {
            if let Some(log) = log.as_deref_mut() {
                log.page(&page.rows)?;
            }
            Ok(page)
        });
        token = page.as_ref().ok().and_then(|p| p.next.clone());
        // A closed channel means planning gave up: nothing more to do.
        if pages.send(page).is_err() {
            return;
        }
    }
}

/// The plan, from the planner that saw both sides: deletes as the policy
/// allows, what collided held back, and never a plan that empties the
/// destination because the source gave nothing.
fn finish_plan(job: &SyncJob<'_>, planner: Planner, progress: &mut Progress) -> Result<Plan, Halt> {
    let policy = &job.pipeline.diff;
    let managed = match policy.deletes {
        Deletes::Managed => Some(job.state.managed_keys(&job.id())?),
        _ => None,
    };
    let plan = planner.finish(policy, managed.as_ref());
    progress.stats.desired = plan.desired_rows;
    progress.stats.unchanged = plan.unchanged;
    progress.stats.held = plan.held.len() as u64;
    for conflict in &plan.held {
        progress.failure(
            &conflict.key,
            format!("held back: `{}` = {} collides with `{}`", conflict.field, conflict.value, conflict.other),
        );
    }
    // An empty desired state most often means a source that broke quietly
    // (an emptied file, a wrong filter): never let it wipe the destination.
    if plan.desired_rows == 0 && !plan.deletes.is_empty() {
        return Err(Halt::Refused(format!(
            "the source gave no rows; refusing to delete all {} destination rows",
            plan.deletes.len()
        )));
    }
    Ok(plan)
}

/// The run's memory budget shared by the destination reader and planning,
/// which fill it side by side until the index is complete.
struct DestinationBudget {
    budget: super::Budget,
    /// What planning holds (desired pages waiting for the index, then the plan).
    planning_bytes: AtomicU64,
    /// What the destination index held at its last page.
    index_bytes: AtomicU64,
}

/// Pages through the whole destination into an index of its owned fields.
fn read_destination(
    mut destination: DestinationInstance,
    owned: &[String],
    mut log: Option<&mut RowWriter>,
    stopping: &dyn Fn() -> bool,
    read: &AtomicU64,
    budget: &DestinationBudget,
) -> Result<(DestinationIndex, DestinationInstance), Halt> {
    let mut index = DestinationIndex::new(owned);
    let mut token: Option<String> = None;
    loop {
        if stopping() {
            return Err(Halt::Stopped);
        }
        let page = destination.snapshot(token.as_deref())?;
        if let Some(log) = log.as_deref_mut() {
            log.page(&page.rows)?;
        }
        index.add_page(&page.rows)?;
        read.store(index.len() as u64, Ordering::Relaxed);
        budget.budget.rows(index.len() as u64, "destination records")?;
        budget.budget.time()?;
        budget.index_bytes.store(index.approx_bytes(), Ordering::Relaxed);
        budget.budget.memory(index.approx_bytes() + budget.planning_bytes.load(Ordering::Relaxed))?;
        token = page.next;
        if token.is_none() {
            return Ok((index, destination));
        }
    }
}

/// Desired rows on their way into the plan.
enum Planning {
    /// The destination index is not complete yet: transformed pages wait,
    /// hashed already, so that only the lookups are left for later.
    Waiting(Vec<HashedRows>),
    /// Pages go straight into the planner.
    Ready(Box<Planner>),
}

impl Planning {
    fn ready(self, index: DestinationIndex, policy: &crate::config::DiffPolicy) -> Result<Planning, Halt> {
        let planner = Box::new(Planner::new(index, policy)?);
        let mut ready = Planning::Ready(planner);
        if let Planning::Waiting(pages) = self {
            for page in pages {
                ready.add(page)?;
            }
        }
        Ok(ready)
    }

    fn add(&mut self, page: HashedRows) -> Result<(), Halt> {
        match self {
            Planning::Waiting(pages) => pages.push(page),
            Planning::Ready(planner) => planner.add(&page)?,
        }
        Ok(())
    }

    /// About how much memory planning holds, for `max_run_memory`.
    fn approx_bytes(&self) -> u64 {
        match self {
            Planning::Waiting(pages) => pages.iter().map(HashedRows::approx_bytes).sum(),
            Planning::Ready(planner) => planner.approx_bytes(),
        }
    }

    fn into_planner(self) -> Result<Planner, Halt> {
        match self {
            Planning::Ready(planner) => Ok(*planner),
            Planning::Waiting(_) => unreachable!("planning is made ready once the destination is read"),
        }
    }
}

/// A diff sync: plan, guard, apply; everything kept in the run archive.
pub(super) fn run(job: &SyncJob<'_>, run: RunId, progress: &mut Progress) -> Result<(), Halt> {
    prune_archives(job, run);
    let dir = job.staging_dir(run);
    let mut recorder = Recorder::create(&dir)?;
    let (plan, destination) = compute_plan(job, Some(&mut recorder), progress)?;
    recorder.finish()?;
    guard_and_apply(job, run, &dir, plan, destination, Vec::new(), progress)
}

/// Archives `plan` (with `left_to_stream`, the keys a reconciliation left
/// out of it), then applies it unless a guard blocks it.
fn guard_and_apply(
    job: &SyncJob<'_>,
    run: RunId,
    dir: &std::path::Path,
    plan: Plan,
    destination: DestinationInstance,
    left_to_stream: Vec<String>,
    progress: &mut Progress,
) -> Result<(), Halt> {
    let guard = plan.blocked_reason(&job.pipeline.diff);
    // A load let past the guard earlier and interrupted (killed, stopped, or
    // failed mid-apply) goes on under the same permission, as long as this
    // plan is no more than what was left of it.
    let resumed = match &guard {
        Some(_) => resumable(job, &plan)?,
        None => None,
    };
    let blocked = guard.clone().filter(|_| resumed.is_none());
    archive::write_plan(dir, &plan)?;
    archive::write_meta(dir, &Meta { left_to_stream, ..meta(job, run, &plan, blocked.clone()) })?;
    if let Some(reason) = blocked.filter(|_| !job.options.force) {
        // The same plan as the one already waiting: that one stays the one
        // to approve, and this run leaves nothing behind.
        if let Some(waiting) = same_blocked_plan(job, run, &plan) {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                tracing::warn!(pipeline = %job.id(), "cannot remove the staged archive `{}`: {e}", dir.display());
            }
            return Err(Halt::StillBlocked(waiting));
        }
        archive::publish(job.state, run, dir)?;
        supersede_blocked(job, run);
        let approval = match job.pipeline.mode {
            // The stream moves on meanwhile: an approval reconciles again.
            crate::config::Mode::Event => format!(
                "approve it with `synchost approve {run}` (which reconciles again and applies no more than this \
                 plan), or reconcile once with --force"
            ),
            _ => format!("approve this exact plan with `synchost approve {run}`, or run once with --force"),
        };
        return Err(Halt::Blocked(format!("{reason}; {approval}")));
    }
    archive::publish(job.state, run, dir)?;
    supersede_blocked(job, run);
    let mut destinations = lanes(job, destination)?;
    let permission = match (&guard, resumed) {
        (_, Some(load)) => {
            tracing::info!(pipeline = %job.id(), "run {run} goes on with the {} of run {}", load.why, load.run);
            Some(PermittedLoad { run, ..load })
        }
        (Some(_), None) => Some(permitted(run, "forced", &plan)),
        (None, None) if plan.destination_rows == 0 && plan.changes() > 0 => Some(permitted(run, "initial load", &plan)),
        (None, None) => None,
    };
    apply_permitted(
        job,
        run,
        permission,
        |progress| apply::apply(job, run, dir, &mut destinations, &plan, progress),
        progress,
    )
}

/// The destination instances of the pipeline's apply lanes: the one that read
/// the destination, and one more per further lane.
fn lanes(job: &SyncJob<'_>, read_with: DestinationInstance) -> Result<Vec<DestinationInstance>, Halt> {
    let mut destinations = vec![read_with];
    for _ in 1..job.pipeline.diff.lanes {
        destinations.push(job.destination()?);
    }
    Ok(destinations)
}

/// The permission a plan is applied under, for [`apply_permitted`].
fn permitted(run: RunId, why: &str, plan: &Plan) -> PermittedLoad {
    PermittedLoad { run, why: why.to_string(), writes: plan.writes(), deletes: plan.deletes.len() as u64 }
}

/// Applies with `permission` recorded until the apply has gone through every
/// batch, so that an interrupted load resumes under it; a finished apply
/// (rejected items aside) leaves the destination in step, and no
/// permission behind.
fn apply_permitted(
    job: &SyncJob<'_>,
    run: RunId,
    permission: Option<PermittedLoad>,
    apply: impl FnOnce(&mut Progress) -> Result<(), Halt>,
    progress: &mut Progress,
) -> Result<(), Halt> {
    if let Some(load) = &permission {
        job.state.set_permitted_load(run, Some(load))?;
    }
    apply(progress)?;
    job.state.set_permitted_load(run, None).map_err(Halt::State)
}

/// The interrupted load this plan may go on with: one that was let past the
/// guard, whose permission covers this plan's writes and deletes.
fn resumable(job: &SyncJob<'_>, plan: &Plan) -> Result<Option<PermittedLoad>, Halt> {
    let load = job.state.permitted_load(&job.id())?;
    Ok(load.filter(|load| plan.writes() <= load.writes && plan.deletes.len() as u64 <= load.deletes))
}

/// The newest blocked run other than `run`, if its plan is this one.
fn same_blocked_plan(job: &SyncJob<'_>, run: RunId, plan: &Plan) -> Option<RunId> {
    let runs = job.state.runs(Some(&job.id()), 1000).ok()?;
    let waiting = runs.iter().find(|r| r.id != run && r.status == RunStatus::Blocked)?;
    let (_, recorded) = Archive::new(job.state, waiting.id).plan().ok()?;
    (recorded.digest() == plan.digest()).then_some(waiting.id)
}

/// Marks plans still waiting for approval as superseded by `run`, which
/// planned afresh: only the newest plan can be approved.
fn supersede_blocked(job: &SyncJob<'_>, run: RunId) {
    let Ok(runs) = job.state.runs(Some(&job.id()), 1000) else { return };
    for old in runs.iter().filter(|r| r.id != run && r.status == RunStatus::Blocked) {
        let why = format!("superseded: run {run} planned again before this plan was approved");
        if let Err(e) = job.state.supersede_run(run, old.id, &why) {
            tracing::warn!(pipeline = %job.id(), "cannot mark run {} superseded: {e}", old.id);
        }
    }
}

/// Before a run: the archives of runs older than the newest
/// `keep_run_archives` are removed, except those of plans waiting for
/// approval, and so are files an earlier run of the pipeline staged and
/// never published (it was killed). A failure here is logged, not fatal: it
/// costs room, not data.
fn prune_archives(job: &SyncJob<'_>, run: RunId) {
    let keep = job.keep_run_archives.max(1);
    let runs = match job.state.runs(Some(&job.id()), usize::MAX >> 1) {
        Ok(runs) => runs,
        Err(e) => return tracing::warn!(pipeline = %job.id(), "cannot list runs to prune archives: {e}"),
    };
    // Event runs keep no archive: the newest archives are counted among the
    // runs that keep one (a pipeline's reconciliations among its event runs).
    let older = runs.iter().filter(|r| r.id != run && r.mode != crate::config::Mode::Event);
    let kept: Vec<RunId> = std::iter::once(run)
        .chain(
            older
                .clone()
                .enumerate()
                .filter(|(i, old)| i + 1 < keep || old.status == RunStatus::Blocked)
                .map(|(_, old)| old.id),
        )
        .collect();
    if let Err(e) = job.state.drop_archives_except(&job.id(), &kept) {
        tracing::warn!(pipeline = %job.id(), "cannot remove old run archives: {e}");
    }
    // Few staged directories, many runs: look at the directories.
    let this_pipelines: std::collections::HashSet<RunId> = older.map(|old| old.id).collect();
    let staging = job.staging_dir(run);
    let Some(Ok(entries)) = staging.parent().map(std::fs::read_dir) else { return };
    for entry in entries.flatten() {
        let staged = entry.path();
        let id = entry.file_name().to_str().and_then(|name| name.parse::<RunId>().ok());
        if id.is_some_and(|id| this_pipelines.contains(&id))
            && let Err(e) = std::fs::remove_dir_all(&staged)
        {
            tracing::warn!(pipeline = %job.id(), "cannot remove the staged archive `{}`: {e}", staged.display());
        }
    }
}

fn meta(job: &SyncJob<'_>, run: RunId, plan: &Plan, blocked: Option<String>) -> Meta {
    Meta {
        run,
        pipeline: job.id().to_string(),
        columns: plan.columns.clone(),
        fingerprint: format!("{:x}", plan.fingerprint),
        destination_rows: plan.destination_rows,
        desired_rows: plan.desired_rows,
        unchanged: plan.unchanged,
        blocked,
        plugins: job.digests(),
        left_to_stream: Vec::new(),
    }
}

/// A plan computed and not applied, for `synchost plan`.
#[derive(Debug)]
pub struct Preview {
    pub plan: Plan,
    pub blocked: Option<String>,
    pub read: u64,
}

/// Plans without writing anything anywhere.
pub(super) fn preview(job: &SyncJob<'_>, progress: &mut Progress) -> Result<Preview, Halt> {
    let (plan, _) = compute_plan(job, None, progress)?;
    let blocked = plan.blocked_reason(&job.pipeline.diff);
    Ok(Preview { plan, blocked, read: progress.stats.read })
}

/// A blocked plan checked for approval, with the destination it was checked on.
pub(super) struct Approvable {
    plan: Plan,
    destination: DestinationInstance,
}

/// Applies the plan that blocked run `run`, checked by [`approvable`].
pub(super) fn approve(
    job: &SyncJob<'_>,
    run: RunId,
    Approvable { plan, destination }: Approvable,
    progress: &mut Progress,
) -> Result<(), Halt> {
    let mut destinations = lanes(job, destination)?;
    let permission = permitted(run, "approved plan", &plan);
    let dir = job.staging_dir(run);
    apply_permitted(
        job,
        run,
        Some(permission),
        |progress| apply::apply(job, run, &dir, &mut destinations, &plan, progress),
        progress,
    )
}

/// Checks that the plan of blocked run `run` can still be applied: its
/// archive reads back and the destination is what it was when it was made.
pub(super) fn approvable(job: &SyncJob<'_>, run: RunId, progress: &mut Progress) -> Result<Approvable, Halt> {
    let (_, plan) = Archive::new(job.state, run).plan()?;
    let mut destination = job.destination()?;
    let mut index = DestinationIndex::new(&plan.columns);
    let mut token: Option<String> = None;
    loop {
        let page = destination.snapshot(token.as_deref())?;
        index.add_page(&page.rows)?;
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    if index.fingerprint() != plan.fingerprint || index.len() as u64 != plan.destination_rows {
        return Err(Halt::Refused(format!(
            "the destination changed since run {run} made its plan ({} records then, {} now); \
             run `synchost sync {}` to plan again",
            plan.destination_rows,
            index.len(),
            job.id()
        )));
    }
    progress.stats.desired = plan.desired_rows;
    progress.stats.destination = plan.destination_rows;
    progress.stats.unchanged = plan.unchanged;
    progress.stats.held = plan.held.len() as u64;
    Ok(Approvable { plan, destination })
}

pub(super) use replay::replay;
