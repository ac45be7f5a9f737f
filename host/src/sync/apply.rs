//! The one apply layer that diff and event syncs share.
//!
//! - **Lanes**: operations go to the destination in lanes, one destination
//!   instance (one store) each; a key always goes to the same lane, by the key
//!   hash of [`synchost_model::lanes`], and a lane applies its operations in
//!   order, so a key's operations keep theirs. Lanes run in parallel on scoped
//!   threads (plugin calls are synchronous wasmtime calls, and a lane's store
//!   never leaves its thread while the lane runs).
//! - **Batching**: a lane sends its operations in calls of at most
//!   `apply_batch` that share their columns.
//! - **Outcomes**: one per operation. A call that fails transiently as a whole
//!   fails each of its operations transiently; any other failure of a call
//!   (a trap, a broken contract) halts the lane, and the others stop at their
//!   next call.
//! - **Retries**: one policy ([`RetryPolicy`]) judges every outcome
//!   ([`Verdict`]): applied, retry after a backoff, given up, rejected, or a
//!   config error. What follows is the caller's to do, its *sink*: a diff run
//!   retries within the run and archives each outcome; an event run carries a
//!   retry to its queue and dead-letters what gave up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use synchost_model::lanes::{key_hash, lane_of};
use synchost_model::{Operation, OperationBatch};

use crate::plugin::{DestinationInstance, PluginError, WitError};

/// An operation on its way to the destination, with what its caller needs to
/// know about it afterwards (`meta`).
pub(crate) struct Pending<M> {
    pub key: String,
    /// The columns of its row; operations of one batch share them.
    pub columns: Arc<Vec<String>>,
    pub operation: Operation,
    /// Attempts already made (0 for a fresh operation).
    pub attempts: u32,
    pub meta: M,
}

/// What an apply did: an outcome for every operation it got to, and the
/// error that stopped it, if one did (operations after it have no outcome).
pub(crate) struct Applied<M> {
    pub outcomes: Vec<(Pending<M>, Result<(), WitError>)>,
    pub halt: Option<PluginError>,
    /// `may_write` said no before a call: the rest was not sent.
    pub lease_lost: bool,
}

/// Applies `operations` through `destinations`, one lane per destination,
/// asking `may_write` before every call (the job's lease, see
/// [`super::LeaseWatch`]).
pub(crate) fn apply<M: Send>(
    destinations: &mut [DestinationInstance],
    operations: Vec<Pending<M>>,
    apply_batch: usize,
    may_write: &(dyn Fn() -> bool + Sync),
) -> Applied<M> {
    let mut lanes: Vec<Vec<Pending<M>>> = destinations.iter().map(|_| Vec::new()).collect();
    for op in operations {
        lanes[lane_of(&op.key, destinations.len())].push(op);
    }
    let stop = AtomicBool::new(false);
    let busy = lanes.iter().filter(|ops| !ops.is_empty()).count();
    let applied: Vec<Applied<M>> = if busy <= 1 {
        // No thread for a single busy lane: the common case of small batches.
        destinations.iter_mut().zip(lanes).map(|(d, ops)| apply_lane(d, ops, apply_batch, &stop, may_write)).collect()
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = destinations
                .iter_mut()
                .zip(lanes)
                .map(|(destination, ops)| {
                    let stop = &stop;
                    scope.spawn(move || apply_lane(destination, ops, apply_batch, stop, may_write))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a lane thread panicked")).collect()
        })
    };
    let mut all = Applied { outcomes: Vec::new(), halt: None, lease_lost: false };
    for lane in applied {
        all.outcomes.extend(lane.outcomes);
        all.halt = all.halt.or(lane.halt);
        all.lease_lost |= lane.lease_lost;
    }
    all
}

fn apply_lane<M>(
    destination: &mut DestinationInstance,
    ops: Vec<Pending<M>>,
    apply_batch: usize,
    stop: &AtomicBool,
    may_write: &(dyn Fn() -> bool + Sync),
) -> Applied<M> {
    let mut applied = Applied { outcomes: Vec::with_capacity(ops.len()), halt: None, lease_lost: false };
    let mut ops = ops.into_iter().peekable();
    while let Some(first) = ops.next() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if !may_write() {
            stop.store(true, Ordering::Relaxed);
            applied.lease_lost = true;
            break;
        }
        // One call carries operations that share their columns (retried
        // operations may have others), up to `apply_batch` of them.
        let mut chunk = vec![first];
        while chunk.len() < apply_batch.max(1)
            && let Some(next) = ops.peek()
            && (Arc::ptr_eq(&next.columns, &chunk[0].columns) || next.columns == chunk[0].columns)
        {
            chunk.push(ops.next().expect("peeked"));
        }
        // The operations go to the plugin; the rest of each pending record
        // waits beside the call and is joined to its operation again.
        let mut operations = Vec::with_capacity(chunk.len());
        let mut rest = Vec::with_capacity(chunk.len());
        for Pending { key, columns, operation, attempts, meta } in chunk {
            operations.push(operation);
            rest.push((key, columns, attempts, meta));
        }
        let batch = OperationBatch { columns: rest[0].1.to_vec(), operations };
        let result = destination.apply(&batch);
        let chunk = batch.operations.into_iter().zip(rest).map(|(operation, (key, columns, attempts, meta))| Pending {
            key,
            columns,
            operation,
            attempts,
            meta,
        });
        match result {
            Ok(results) => applied.outcomes.extend(chunk.zip(results)),
            // A transient failure of the whole call: each operation in it
            // failed transiently.
            Err(PluginError::Returned { error: error @ WitError::Transient(_), .. }) => {
                applied.outcomes.extend(chunk.map(|op| (op, Err(error.clone()))));
            }
            Err(error) => {
                stop.store(true, Ordering::Relaxed);
                applied.halt = Some(error);
                break;
            }
        }
    }
    applied
}

/// How often and how soon an operation that failed transiently is tried
/// again, whichever sync mode carries the retry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first one included, before giving up.
    pub max_attempts: u32,
    /// The wait after the first failure; each further one doubles, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
}

/// What becomes of an operation, given its outcome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Applied,
    /// Failed transiently: try again, as attempt `attempts + 1`, after `wait`.
    Retry {
        attempts: u32,
        wait: Duration,
        reason: String,
    },
    /// Failed transiently `attempts` times, the policy's last attempt included.
    GaveUp {
        attempts: u32,
        reason: String,
    },
    /// The destination will never apply it.
    Rejected(String),
    /// The destination says its configuration is wrong: retrying cannot
    /// help, and the run stops for an operator.
    Config(String),
}

impl RetryPolicy {
    /// An event pipeline's policy: a retry is carried to its queue.
    pub(crate) fn for_events(policy: &crate::config::EventPolicy) -> RetryPolicy {
        RetryPolicy {
            max_attempts: policy.max_attempts,
            backoff: policy.retry_backoff,
            backoff_max: policy.retry_backoff_max,
        }
    }

    /// A diff run's policy: it retries within the run, briefly, since what
    /// does not apply is planned again by the next run anyway.
    pub(crate) const IN_RUN: RetryPolicy =
        RetryPolicy { max_attempts: 4, backoff: Duration::from_millis(100), backoff_max: Duration::from_secs(2) };

    /// Judges the outcome of attempt `attempts_before + 1` of the operation on `key`.
    pub(crate) fn verdict(&self, key: &str, attempts_before: u32, result: &Result<(), WitError>) -> Verdict {
        match result {
            Ok(()) => Verdict::Applied,
            Err(error @ WitError::Config(_)) => Verdict::Config(error.to_string()),
            Err(error @ WitError::Rejected(_)) => Verdict::Rejected(error.to_string()),
            Err(error @ WitError::Transient(_)) => {
                let attempts = attempts_before + 1;
                if attempts < self.max_attempts {
                    let wait = self.backoff(attempts, jitter_seed(key, attempts));
                    Verdict::Retry { attempts, wait, reason: error.to_string() }
                } else {
                    Verdict::GaveUp { attempts, reason: format!("gave up after {attempts} attempt(s): {error}") }
                }
            }
        }
    }

    /// The wait before attempt `attempts + 1`, after `attempts` failures (at
    /// least one): `backoff * 2^(attempts-1)`, capped at `backoff_max`, then
    /// "equal jitter" — a random point in its upper half — so that keys that
    /// failed together do not all come back at the same moment, and no wait
    /// is shorter than half.
    pub(crate) fn backoff(&self, attempts: u32, random: u64) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let full = self.backoff.saturating_mul(1u32 << exponent).min(self.backoff_max);
        let half = full / 2;
        let spread = half.as_nanos() as u64;
        let jitter = if spread == 0 { 0 } else { random % (spread + 1) };
        half + Duration::from_nanos(jitter)
    }
}

/// A random number for jitter: splitmix64 of the key's hash and the clock. Not
/// for anything that needs real randomness; it only spreads retries out.
fn jitter_seed(key: &str, attempts: u32) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mut x = key_hash(key) ^ (nanos as u64) ^ ((attempts as u64) << 48);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy =
        RetryPolicy { max_attempts: 3, backoff: Duration::from_millis(100), backoff_max: Duration::from_secs(10) };

    #[test]
    fn backoff_doubles_stays_in_its_upper_half_and_is_capped() {
        for (attempts, full_ms) in [(1, 100), (2, 200), (3, 400), (4, 800), (8, 10_000), (40, 10_000)] {
            let full = Duration::from_millis(full_ms);
            let shortest = POLICY.backoff(attempts, 0);
            let longest = POLICY.backoff(attempts, u64::MAX - 1);
            assert_eq!(shortest, full / 2, "attempt {attempts}");
            assert!(longest <= full && longest > full / 2, "attempt {attempts}: {longest:?}");
            let some = POLICY.backoff(attempts, jitter_seed("k", attempts));
            assert!(some >= full / 2 && some <= full);
        }
    }

    #[test]
    fn jitter_spreads_keys_apart() {
        let waits: std::collections::BTreeSet<Duration> =
            (0..50).map(|i| POLICY.backoff(3, jitter_seed(&format!("key{i}"), 3))).collect();
        assert!(waits.len() > 40, "{} distinct waits of 50", waits.len());
    }

    #[test]
    fn every_outcome_gets_one_verdict() {
        assert_eq!(POLICY.verdict("k", 0, &Ok(())), Verdict::Applied);
        let transient = Err(WitError::Transient("busy".into()));
        let Verdict::Retry { attempts: 1, wait, reason } = POLICY.verdict("k", 0, &transient) else {
            panic!("a first transient failure is retried")
        };
        assert!(wait >= Duration::from_millis(50) && wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(reason, "transient error: busy");
        assert!(matches!(POLICY.verdict("k", 1, &transient), Verdict::Retry { attempts: 2, .. }));
        assert_eq!(
            POLICY.verdict("k", 2, &transient),
            Verdict::GaveUp { attempts: 3, reason: "gave up after 3 attempt(s): transient error: busy".into() }
        );
        let rejected = Err(WitError::Rejected("no such record".into()));
        assert_eq!(POLICY.verdict("k", 0, &rejected), Verdict::Rejected("rejected error: no such record".into()));
        let config = Err(WitError::Config("no directory".into()));
        assert_eq!(POLICY.verdict("k", 5, &config), Verdict::Config("config error: no directory".into()));
    }
}
