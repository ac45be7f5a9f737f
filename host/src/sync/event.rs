//! Event sync: read events after the stored cursor, transform them, collapse
//! them per key, apply them in parallel lanes, carry failures forward, and
//! commit everything a batch did in one transaction.
//!
//! One batch, in order:
//! 1. read up to `max_batch` events after the cursor, and the retry queue;
//! 2. transform the upserts; deletes pass through by key;
//! 3. collapse per key ([`collapse`]): events carry full state, so only a
//!    key's last operation in the batch is applied, in the place of that event;
//! 4. settle the retry queue ([`retry`]): an operation for a key that has a
//!    queued one *supersedes* it and takes its place in the queue, keeping its
//!    attempts and its schedule — it never overtakes the queued one, never
//!    runs before the retry is due, and the older state is never applied
//!    after it. Due queue items are attempted with the batch; other keys are
//!    not held up;
//! 5. apply in lanes by a stable hash of the key ([`super::apply`], the
//!    layer diff syncs apply through too);
//! 6. outcomes, judged by the pipeline's retry policy: applied; transient →
//!    the retry queue (backoff with jitter; after `max_attempts` → dead letters); rejected → dead letters with the
//!    reason and the operation; a config error → the run pauses, nothing of
//!    the batch is committed and the cursor stays;
//! 7. commit the cursor, the queue changes, the dead letters and the batch's
//!    stats in one transaction.
//!
//! Batches overlap in three stages: while batch N is applied and committed,
//! N+1 is transformed and N+2 is read (each plugin instance on one thread at a
//! time). Reading has no side effects, so what was read ahead is dropped if
//! batch N does not commit; only the apply and the commit are strictly in
//! order, so a pipeline costs little more than its slowest stage.
//!
//! A crash anywhere before the commit means the batch is read again from the
//! old cursor, with the old queue: at-least-once delivery, made effectively
//! once by the idempotency key every operation carries (pipeline, source
//! position, key), which the file destination honours. Since a re-read batch
//! starts at the same cursor, it holds the same events (or more, if
//! `max_batch` grew), so no key's state goes back. (Lowering `max_batch`
//! between a crash and the restart may show a key's older state until the
//! rest of the crashed batch is applied again.)

mod collapse;
mod retry;

pub(crate) use retry::operation_from_json;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::apply::{self, Pending, RetryPolicy, Verdict};
use super::{Halt, Progress, SyncJob, TransformChain};
use crate::plugin::{PluginError, WitError};
use crate::state::{BatchStats, EventCommit, NewDeadLetter, NewRetry, PipelineId, RetryItem, RunId};
use synchost_model::{Action, Change, EventBatch, Operation, Row, Table};

pub(super) fn run(job: &SyncJob<'_>, run: RunId, progress: &mut Progress) -> Result<(), Halt> {
    let id = job.id();
    let mut stages = Stages::start(job, &id, progress)?;
    let outcome = loop {
        if let Err(end) = at_boundary(job, progress) {
            break end;
        }
        let fetched = match stages.next.take() {
            Some(fetched) => fetched,
            None => read(&mut stages.source, job.pipeline.max_batch, stages.cursor.as_deref())
                .and_then(|r| transform(&id, &mut stages.transforms, r)),
        };
        let step = fetched.and_then(|fetched| stages.step(job, &id, run, fetched, progress));
        match step {
            Ok(None) => break Ok(()),
            Ok(Some(next_cursor)) => stages.cursor = Some(next_cursor),
            Err(e) => break Err(e),
        }
    };
    // However the run ended, what it read is past: a cursor moved over input
    // without events is kept, even when the run failed after it.
    let outcome = outcome.and(stages.commit_moved_cursor(job, &id, run, progress));
    if let Some((seq, ms)) = stages.commits.previous {
        job.state.set_batch_commit_time(run, seq, ms).map_err(Halt::State)?;
    }
    outcome
}

/// Whether the run goes on to another batch: `Err` with how it ends if not.
/// At a batch boundary everything committed so far stays, and the next run
/// goes on from the cursor.
fn at_boundary(job: &SyncJob<'_>, progress: &Progress) -> Result<(), Result<(), Halt>> {
    if job.options.max_batches.is_some_and(|max| progress.stats.batches >= max) {
        return Err(Ok(()));
    }
    if job.should_stop() {
        return Err(Err(Halt::Stopped));
    }
    progress.budget.rows(progress.stats.read, "events").and_then(|()| progress.budget.time()).map_err(Err)?;
    // Whatever was read and transformed ahead was done by the old version:
    // it is dropped, and the next run reads it again.
    if job.is_superseded() {
        return Err(Err(Halt::HandedOver));
    }
    Ok(())
}

/// An event run's plugin instances and what it carries from batch to batch.
struct Stages {
    source: crate::plugin::SourceInstance,
    transforms: TransformChain,
    /// One per lane.
    destinations: Vec<crate::plugin::DestinationInstance>,
    /// Where the next batch is read from.
    cursor: Option<String>,
    commits: Commits,
    /// Keys with a dead letter that no later operation has superseded yet.
    lettered: HashSet<String>,
    /// Batches ahead of the one being applied: the next one transformed, the
    /// one after it read. Reading is side-effect free: what was read ahead is
    /// simply dropped if the batch in hand does not commit.
    next: Option<Result<Fetched, Halt>>,
    after_next: Option<Result<Read, Halt>>,
}

impl Stages {
    fn start(job: &SyncJob<'_>, id: &PipelineId, progress: &mut Progress) -> Result<Stages, Halt> {
        let source = job.source().map_err(|e| halt(e, None))?;
        let acknowledger = source.acknowledger();
        let transforms = job.transforms().map_err(|e| halt(e, None))?;
        let destinations = (0..job.pipeline.event.lanes)
            .map(|_| job.destination())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| halt(e, None))?;
        let cursor = job.state.cursor(id).map_err(Halt::State)?;
        progress.stats.cursor_before = cursor.clone();
        progress.stats.cursor_after = cursor.clone();
        let lettered = job
            .state
            .dead_letters(id)
            .map_err(Halt::State)?
            .into_iter()
            .filter(|l| l.superseded_by.is_none())
            .map(|l| l.key)
            .collect();
        Ok(Stages {
            source,
            commits: Commits { cursor: cursor.clone(), previous: None, acknowledger },
            transforms,
            destinations,
            cursor,
            lettered,
            next: None,
            after_next: None,
        })
    }

    /// Applies and commits `fetched` while the next batch is transformed and
    /// the one after it read, on scoped threads. `None`: nothing was left to do.
    fn step(
        &mut self,
        job: &SyncJob<'_>,
        id: &PipelineId,
        run: RunId,
        fetched: Fetched,
        progress: &mut Progress,
    ) -> Result<Option<String>, Halt> {
        let max_batch = job.pipeline.max_batch;
        let wanted = |ahead: u64| {
            fetched.events > 0 && job.options.max_batches.is_none_or(|max| progress.stats.batches + ahead < max)
        };
        let (want_next, want_after_next) = (wanted(1), wanted(2));
        let mut batch = Batch::new(job, id, self.cursor.as_deref(), progress.stats.batches + 1);
        let (source, transforms) = (&mut self.source, &mut self.transforms);
        let pending_read = self.after_next.take();
        let next_cursor_hint = fetched.next_cursor.clone();
        std::thread::scope(|scope| {
            // The next batch: transform what was read ahead, or read it now
            // (then the source is busy and nothing is read further ahead).
            let (transformer, reader) = match pending_read {
                Some(read_ahead) if want_next => {
                    let after_cursor = read_ahead.as_ref().ok().map(|r| r.batch.cursor.clone());
                    let transformer = scope.spawn(|| read_ahead.and_then(|r| transform(id, transforms, r)));
                    let reader = after_cursor
                        .filter(|_| want_after_next)
                        .map(|c| scope.spawn(move || read(source, max_batch, Some(&c))));
                    (Some(transformer), reader)
                }
                _ => {
                    let transformer = want_next.then(|| {
                        scope.spawn(|| {
                            read(source, max_batch, Some(&next_cursor_hint)).and_then(|r| transform(id, transforms, r))
                        })
                    });
                    (transformer, None)
                }
            };
            let step = batch.run(fetched, &mut self.destinations, &mut self.lettered, progress).and_then(|done| {
                let Some(next_cursor) = done else { return Ok(None) };
                if batch.moved_only {
                    return Ok(Some(next_cursor));
                }
                self.commits.commit(&mut batch, run, &next_cursor, progress)?;
                Ok(Some(next_cursor))
            });
            self.next = transformer.map(|t| t.join().expect("the transforming thread panicked"));
            self.after_next = reader.map(|r| r.join().expect("the reading thread panicked"));
            step
        })
    }

    /// Commits the cursor if it moved past input without events since the
    /// last commit (see [`Commits::cursor`]).
    fn commit_moved_cursor(
        &mut self,
        job: &SyncJob<'_>,
        id: &PipelineId,
        run: RunId,
        progress: &mut Progress,
    ) -> Result<(), Halt> {
        let Some(cursor) = self.cursor.clone().filter(|_| self.cursor != self.commits.cursor) else { return Ok(()) };
        let from = self.commits.cursor.clone();
        let mut batch = Batch::new(job, id, from.as_deref(), progress.stats.batches + 1);
        self.commits.commit(&mut batch, run, &cursor, progress)
    }
}

/// What the run has committed: every batch's commit goes through here.
struct Commits {
    /// The cursor as the state store has it. It lags [`Stages::cursor`] while
    /// the source only moves past input without events (blank lines, say):
    /// such moves are committed with the next batch that has events, or as
    /// the run ends, so that a source that only moves its cursor costs one
    /// state write per run rather than one per call.
    cursor: Option<String>,
    /// The previous batch's sequence and commit time, recorded with the next.
    previous: Option<(u64, f64)>,
    /// Acknowledges a JetStream source's messages, only once committed.
    acknowledger: crate::plugin::Acknowledger,
}

impl Commits {
    /// Commits `batch` with the cursor it leaves, then acknowledges to a
    /// JetStream source every message up to that cursor.
    fn commit(
        &mut self,
        batch: &mut Batch<'_, '_>,
        run: RunId,
        cursor: &str,
        progress: &mut Progress,
    ) -> Result<(), Halt> {
        let started = Instant::now();
        batch.commit(run, cursor, self.previous, progress)?;
        self.acknowledger.committed(cursor);
        self.previous = Some((batch.stats.seq, ms(started)));
        self.cursor = Some(cursor.to_string());
        Ok(())
    }
}

/// A batch read and transformed, and collapsed per key: ready to apply.
struct Fetched {
    events: u64,
    operations_before_collapse: u64,
    /// The batch's operations, one per key.
    operations: Vec<PendingOp>,
    next_cursor: String,
    read_ms: f64,
    transform_ms: f64,
}

/// A batch read from the source, not yet transformed.
struct Read {
    /// The cursor it was read after, for errors.
    from: Option<String>,
    batch: EventBatch,
    read_ms: f64,
}

/// Reads up to `max` events after `cursor`.
fn read(source: &mut crate::plugin::SourceInstance, max: u32, cursor: Option<&str>) -> Result<Read, Halt> {
    let started = Instant::now();
    let batch = source.events(cursor, max).map_err(|e| halt(e, cursor))?;
    Ok(Read { from: cursor.map(str::to_string), batch, read_ms: ms(started) })
}

/// Transforms and collapses a batch that was read.
fn transform(id: &PipelineId, transforms: &mut TransformChain, read: Read) -> Result<Fetched, Halt> {
    let Read { from, batch, read_ms } = read;
    let started = Instant::now();
    let events = batch.events.len() as u64;
    let next_cursor = batch.cursor.clone();
    let (operations, before) = if events == 0 {
        (Vec::new(), 0)
    } else {
        operations_for(id, transforms, batch).map_err(|e| match e {
            Halt::Plugin(e) => halt(e, from.as_deref()),
            other => other,
        })?
    };
    Ok(Fetched {
        events,
        operations_before_collapse: before,
        operations,
        next_cursor,
        read_ms,
        transform_ms: ms(started),
    })
}

/// What a plugin error means for the run: a config error pauses the pipeline
/// (an operator must act; retrying cannot help), anything else fails the run.
fn halt(error: PluginError, cursor: Option<&str>) -> Halt {
    if matches!(error.returned(), Some(WitError::Config(_))) {
        Halt::Paused(format!(
            "{error}; the pipeline is paused until an operator fixes this, and the cursor stays at {}",
            cursor.unwrap_or("the start")
        ))
    } else {
        Halt::Plugin(error)
    }
}

/// One batch in the making: what it will commit.
struct Batch<'j, 'a> {
    job: &'j SyncJob<'a>,
    id: &'j PipelineId,
    cursor: Option<&'j str>,
    stats: BatchStats,
    queued: Vec<NewRetry>,
    unqueued: Vec<String>,
    dead_letters: Vec<NewDeadLetter>,
    superseded_letters: Vec<(String, String)>,
    /// Keys the destination now holds a newer state of.
    applied: HashSet<String>,
    queue_seen_up_to: i64,
    /// The keys in the retry queue when the batch read it.
    queue_keys: HashSet<String>,
    /// The batch had no events and nothing to retry: it only moved the cursor.
    moved_only: bool,
}

impl<'j, 'a> Batch<'j, 'a> {
    fn new(job: &'j SyncJob<'a>, id: &'j PipelineId, cursor: Option<&'j str>, seq: u64) -> Self {
        Batch {
            job,
            id,
            cursor,
            stats: BatchStats {
                seq,
                cursor_before: cursor.map(str::to_string),
                lanes: job.pipeline.event.lanes as u64,
                ..BatchStats::default()
            },
            queued: Vec::new(),
            unqueued: Vec::new(),
            dead_letters: Vec::new(),
            superseded_letters: Vec::new(),
            applied: HashSet::new(),
            queue_seen_up_to: 0,
            queue_keys: HashSet::new(),
            moved_only: false,
        }
    }

    /// Applies one fetched batch, with the retry queue. `None`: nothing to
    /// do (caught up, no retry due); otherwise the cursor to commit.
    fn run(
        &mut self,
        fetched: Fetched,
        destinations: &mut [crate::plugin::DestinationInstance],
        lettered: &mut HashSet<String>,
        progress: &mut Progress,
    ) -> Result<Option<String>, Halt> {
        let job = self.job;
        let policy = &job.pipeline.event;
        let started = Instant::now();
        let queue = job.state.retry_queue(self.id).map_err(Halt::State)?;
        self.queue_seen_up_to = queue.iter().map(|item| item.id).max().unwrap_or(0);
        self.queue_keys = queue.iter().map(|item| item.key.clone()).collect();
        let now = chrono::Utc::now().timestamp_millis();
        let any_due = queue.iter().any(|item| item.next_attempt_at <= now);
        if fetched.events == 0 && !any_due {
            // Caught up, or moved past input with no events (blank lines,
            // say): a cursor that moved is worth keeping, and `Stages`
            // commits it (see `Commits::cursor`).
            self.stats.pending_retries = queue.len() as u64;
            progress.stats.pending_retries = queue.len() as u64;
            self.moved_only = true;
            return Ok((self.cursor != Some(fetched.next_cursor.as_str())).then_some(fetched.next_cursor));
        }
        self.stats.events = fetched.events;
        self.stats.read_ms = fetched.read_ms;
        self.stats.transform_ms = fetched.transform_ms;
        self.stats.operations = fetched.operations_before_collapse;
        self.stats.collapsed = fetched.operations_before_collapse - fetched.operations.len() as u64;
        let (operations, next_cursor) = (fetched.operations, fetched.next_cursor);

        let to_apply = self.settle_queue(queue, operations, now)?;
        let apply_started = Instant::now();
        let applied = apply::apply(destinations, to_apply, job.pipeline.apply_batch, &|| job.lease.holds());
        self.stats.apply_ms = ms(apply_started);
        if applied.lease_lost {
            return Err(Halt::LeaseLost);
        }
        // Nothing of a batch that halts is committed: it is read again, with
        // the old queue, by the next run (operations already applied are
        // recognised by their idempotency keys).
        if let Some(error) = applied.halt {
            return Err(halt(error, self.cursor));
        }
        // A config error for a single operation still says the configuration
        // is wrong (a missing directory, say): retrying cannot help and
        // dead-lettering would bury it, so the pipeline pauses.
        let config_error = applied.outcomes.iter().find_map(|(op, result)| match result {
            Err(error @ WitError::Config(_)) => Some((op.key.clone(), error.to_string())),
            _ => None,
        });
        if let Some((key, reason)) = config_error {
            return Err(Halt::Paused(format!(
                "the destination could not apply `{key}`: {reason}; the pipeline is paused until an operator fixes \
                 this, and the cursor stays at {}",
                self.cursor.unwrap_or("the start")
            )));
        }
        let retry = RetryPolicy::for_events(policy);
        for (op, result) in applied.outcomes {
            let verdict = retry.verdict(&op.key, op.attempts, &result);
            self.settle(op, verdict, lettered, progress);
        }
        // Reading and transforming ran beside the previous batch's apply.
        self.stats.work_ms = self.stats.read_ms + self.stats.transform_ms + ms(started);
        Ok(Some(next_cursor))
    }

    /// Merges the batch's operations with the retry queue. Returns what to
    /// apply now: the batch's operations for keys with nothing queued, and
    /// every due queue item (with the newest operation for its key).
    fn settle_queue(
        &mut self,
        queue: Vec<RetryItem>,
        operations: Vec<PendingOp>,
        now: i64,
    ) -> Result<Vec<PendingOp>, Halt> {
        let mut waiting: HashMap<String, RetryItem> = queue.into_iter().map(|item| (item.key.clone(), item)).collect();
        let mut to_apply = Vec::with_capacity(operations.len());
        for mut op in operations {
            let Some(item) = waiting.remove(&op.key) else {
                to_apply.push(op);
                continue;
            };
            // The newer full state takes the queued item's place, attempts and
            // schedule: it neither overtakes the item nor is overtaken by it.
            self.stats.superseded += 1;
            op.attempts = item.attempts;
            op.meta.queued = true;
            if item.next_attempt_at <= now {
                to_apply.push(op);
            } else {
                self.queued.push(NewRetry {
                    key: op.key.clone(),
                    position: op.meta.position.clone(),
                    operation: retry::operation_json(&op.columns, &op.operation.action),
                    attempts: item.attempts,
                    next_attempt_at: item.next_attempt_at,
                    last_error: item.last_error,
                });
                self.applied.insert(op.key.clone());
            }
        }
        let mut due: Vec<RetryItem> = waiting.into_values().filter(|item| item.next_attempt_at <= now).collect();
        due.sort_by_key(|item| item.id);
        for item in due {
            let (columns, action) = retry::operation_from_json(&item.operation).map_err(|e| {
                Halt::Refused(format!("retry item {} for `{}` in the state store is damaged: {e}", item.id, item.key))
            })?;
            self.stats.retried += 1;
            to_apply.push(from_queue(self.id, item, columns, action));
        }
        Ok(to_apply)
    }

    /// Records what became of one operation.
    fn settle(&mut self, op: PendingOp, verdict: Verdict, lettered: &mut HashSet<String>, progress: &mut Progress) {
        // Any later operation for a key makes its earlier dead letters obsolete.
        if lettered.remove(&op.key) {
            self.superseded_letters.push((op.key.clone(), op.meta.position.clone()));
        }
        let dead_letter = match verdict {
            Verdict::Applied => {
                match op.operation.action {
                    Action::Delete(_) => self.stats.deleted += 1,
                    _ => self.stats.upserted += 1,
                }
                if op.meta.queued {
                    self.unqueued.push(op.key.clone());
                }
                self.applied.insert(op.key);
                return;
            }
            Verdict::Retry { attempts, wait, reason } => {
                progress.stats.failed += 1;
                let shown = humantime::format_duration(std::time::Duration::from_millis(wait.as_millis() as u64));
                progress.failure(&op.key, format!("{reason} (attempt {attempts}, retried in {shown})"));
                self.stats.queued += 1;
                self.queued.push(NewRetry {
                    key: op.key.clone(),
                    position: op.meta.position.clone(),
                    operation: retry::operation_json(&op.columns, &op.operation.action),
                    attempts,
                    next_attempt_at: chrono::Utc::now().timestamp_millis() + wait.as_millis() as i64,
                    last_error: reason,
                });
                self.applied.insert(op.key);
                return;
            }
            Verdict::GaveUp { reason, .. } => {
                progress.stats.failed += 1;
                self.stats.expired += 1;
                reason
            }
            // Config errors never get here: they pause the run first.
            Verdict::Rejected(reason) | Verdict::Config(reason) => {
                self.stats.rejected += 1;
                reason
            }
        };
        progress.failure(&op.key, dead_letter.clone());
        if op.meta.queued {
            self.unqueued.push(op.key.clone());
        }
        lettered.insert(op.key.clone());
        self.dead_letters.push(NewDeadLetter {
            position: op.meta.position,
            key: op.key,
            operation: retry::operation_json(&op.columns, &op.operation.action),
            reason: dead_letter,
        });
    }

    fn commit(
        &mut self,
        run: RunId,
        cursor: &str,
        previous_commit_ms: Option<(u64, f64)>,
        progress: &mut Progress,
    ) -> Result<(), Halt> {
        self.stats.cursor_after = cursor.to_string();
        let job = self.job;
        // What the queue holds after this commit.
        for key in &self.unqueued {
            self.queue_keys.remove(key);
        }
        self.queue_keys.extend(self.queued.iter().map(|item| item.key.clone()));
        self.stats.pending_retries = self.queue_keys.len() as u64;
        progress.stats.add_batch(&self.stats, self.dead_letters.len() as u64);
        let applied = &self.applied;
        let applied_keys = |key: &str| applied.contains(key);
        let committing = Instant::now();
        job.state
            .commit_event_batch(&EventCommit {
                run,
                pipeline: self.id,
                cursor,
                queued: &self.queued,
                unqueued: &self.unqueued,
                dead_letters: &self.dead_letters,
                superseded_letters: &self.superseded_letters,
                queue_seen_up_to: self.queue_seen_up_to,
                applied_keys: &applied_keys,
                batch: &self.stats,
                previous_commit_ms,
                stats: &progress.stats,
            })
            .map_err(Halt::State)?;
        progress.batch_committed(run, committing.elapsed().as_secs_f64());
        let s = &progress.stats;
        progress.batch_applied(s.upserted + s.deleted + s.rejected + s.dead_lettered, None);
        Ok(())
    }
}

/// What the event stream holds past a cursor, up to its head when read: for
/// a reconciliation, which keys the stream is about to bring to a newer state.
pub(crate) struct StreamAhead {
    /// Keys of the events, as read and as the transforms made them.
    pub keys: HashSet<String>,
    pub events: u64,
    /// The cursor after the last event read (the high watermark).
    pub head: Option<String>,
}

/// Reads (and transforms, applying nothing) every event after `from` up to
/// the stream's head, with the pipeline's own source and transforms.
pub(crate) fn read_ahead(job: &SyncJob<'_>, from: Option<&str>, progress: &Progress) -> Result<StreamAhead, Halt> {
    let id = job.id();
    let mut source = job.source().map_err(|e| halt(e, from))?;
    let mut transforms = job.transforms().map_err(|e| halt(e, from))?;
    let mut ahead = StreamAhead { keys: HashSet::new(), events: 0, head: from.map(str::to_string) };
    loop {
        if job.should_stop() {
            return Err(Halt::Stopped);
        }
        progress.budget.time()?;
        let read = read(&mut source, job.pipeline.max_batch, ahead.head.as_deref())?;
        if read.batch.events.is_empty() {
            return Ok(ahead);
        }
        for event in &read.batch.events {
            let key = match &event.change {
                Change::Upsert(row) => &row.key,
                Change::Delete(key) => key,
            };
            if !ahead.keys.contains(key) {
                ahead.keys.insert(key.clone());
            }
        }
        let fetched = transform(&id, &mut transforms, read)?;
        ahead.keys.extend(fetched.operations.into_iter().map(|op| op.key));
        ahead.events += fetched.events;
        ahead.head = Some(fetched.next_cursor);
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// An event operation on its way to the destination.
type PendingOp = Pending<EventOp>;

/// What an event operation carries beside the operation itself.
struct EventOp {
    /// The source position of the event it came from.
    position: String,
    /// Whether it stands in the retry queue (its item must be settled).
    queued: bool,
}

/// A queued operation, rebuilt from the state store.
fn from_queue(pipeline: &PipelineId, item: RetryItem, columns: Vec<String>, action: Action) -> PendingOp {
    Pending {
        operation: Operation { idempotency_key: idempotency_key(pipeline, &item.position, &item.key), action },
        key: item.key,
        columns: Arc::new(columns),
        attempts: item.attempts,
        meta: EventOp { position: item.position, queued: true },
    }
}

/// The key a destination may use to apply an operation at most once: the same
/// for the same event whenever it is delivered.
fn idempotency_key(pipeline: &PipelineId, position: &str, key: &str) -> String {
    format!("{pipeline}@{position}#{key}")
}

/// The operations for a batch of events, collapsed per key (see
/// [`collapse`]), and how many there were before collapsing: an upsert becomes
/// the upserts of the rows the transforms made of it; a delete passes through
/// by key. Positions and idempotency keys are made for the survivors only.
fn operations_for(
    id: &PipelineId,
    transforms: &mut TransformChain,
    batch: EventBatch,
) -> Result<(Vec<PendingOp>, u64), Halt> {
    let mut upsert_rows: Vec<Row> = Vec::new();
    let mut upsert_events: Vec<usize> = Vec::new();
    let mut positions = Vec::with_capacity(batch.events.len());
    let mut deletes: Vec<Option<String>> = Vec::with_capacity(batch.events.len());
    for (i, event) in batch.events.into_iter().enumerate() {
        positions.push(event.position);
        match event.change {
            Change::Upsert(row) => {
                upsert_rows.push(row);
                upsert_events.push(i);
                deletes.push(None);
            }
            Change::Delete(key) => deletes.push(Some(key)),
        }
    }
    let out = transforms.apply(Table::from_rows(batch.columns, &upsert_rows))?;
    let columns = Arc::new(out.table.columns.clone());

    // (event, action) in event order: the rows an upsert became sit where
    // the upsert was, whatever order the transform returned them in.
    let mut rows_of_event: Vec<Vec<Row>> = vec![Vec::new(); positions.len()];
    for (row, origin) in out.table.to_rows().into_iter().zip(out.origins) {
        rows_of_event[upsert_events[origin as usize]].push(row);
    }
    let mut actions: Vec<(usize, Action)> = Vec::with_capacity(positions.len());
    for (event, (delete, rows)) in deletes.into_iter().zip(rows_of_event).enumerate() {
        match delete {
            Some(key) => actions.push((event, Action::Delete(key))),
            None => actions.extend(rows.into_iter().map(|row| (event, Action::Upsert(row)))),
        }
    }
    let before = actions.len() as u64;
    let (actions, _) = collapse::collapse(actions, |(_, action)| action.key());
    let operations = actions
        .into_iter()
        .map(|(event, action)| {
            let key = action.key().to_string();
            let position = positions[event].clone();
            Pending {
                operation: Operation { idempotency_key: idempotency_key(id, &position, &key), action },
                key,
                columns: columns.clone(),
                attempts: 0,
                meta: EventOp { position, queued: false },
            }
        })
        .collect();
    Ok((operations, before))
}
