//! Applying a batch's operations in parallel lanes: a key always goes to the
//! same lane (a stable hash), each lane has its own destination instance (its
//! own store) and applies its operations in order, in calls of at most
//! `apply_batch` operations. Lanes run on scoped threads: plugin calls are
//! synchronous wasmtime calls, and a lane's store never leaves its thread
//! while the lane runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::plugin::types::{Operation, OperationBatch};
use crate::plugin::{DestinationInstance, PluginError, WitError};

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher,
/// so a key keeps its lane from run to run. The file destination shards keys
/// with the same hash, so with a shard count that is a multiple of the lane
/// count no two lanes ever write the same shard file.
pub(crate) fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The lane of a key.
pub(super) fn lane_of(key: &str, lanes: usize) -> usize {
    (fnv1a(key) % lanes as u64) as usize
}

/// An operation on its way to the destination, with what the engine needs to
/// know about it afterwards.
pub(super) struct PendingOp {
    /// The source position of the event it came from.
    pub position: String,
    pub key: String,
    /// The columns of its row; operations of one batch share them.
    pub columns: Arc<Vec<String>>,
    pub operation: Operation,
    /// Attempts already made (0 for a fresh operation).
    pub attempts: u32,
    /// Whether it stands in the retry queue (its item must be settled).
    pub queued: bool,
}

/// What travels beside an operation while the destination has it:
/// position, key, columns, attempts, queued.
type OpMeta = (String, String, Arc<Vec<String>>, u32, bool);

/// What one lane did: an outcome for every operation it got to, and the
/// error that stopped it, if one did.
pub(super) struct LaneOutcome {
    pub done: Vec<(PendingOp, Result<(), WitError>)>,
    pub halt: Option<PluginError>,
}

/// Applies each lane's operations on its own destination, lanes in parallel.
/// A lane stops at an error that concerns the whole destination (a config
/// error, a trap); the others are told to stop at their next call, since the
/// batch will not be committed anyway.
pub(super) fn apply(
    destinations: &mut [DestinationInstance],
    lanes: Vec<Vec<PendingOp>>,
    apply_batch: usize,
) -> Vec<LaneOutcome> {
    let stop = AtomicBool::new(false);
    let busy = lanes.iter().filter(|ops| !ops.is_empty()).count();
    if busy <= 1 {
        // No thread for a single busy lane: the common case of small batches.
        return destinations.iter_mut().zip(lanes).map(|(d, ops)| apply_lane(d, ops, apply_batch, &stop)).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = destinations
            .iter_mut()
            .zip(lanes)
            .map(|(destination, ops)| {
                let stop = &stop;
                scope.spawn(move || apply_lane(destination, ops, apply_batch, stop))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a lane thread panicked")).collect()
    })
}

fn apply_lane(
    destination: &mut DestinationInstance,
    ops: Vec<PendingOp>,
    apply_batch: usize,
    stop: &AtomicBool,
) -> LaneOutcome {
    let mut outcome = LaneOutcome { done: Vec::with_capacity(ops.len()), halt: None };
    let mut ops = ops.into_iter().peekable();
    while let Some(first) = ops.next() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // One call carries operations that share their columns (retried
        // operations may have others), up to `apply_batch` of them.
        let mut chunk = vec![first];
        while chunk.len() < apply_batch
            && let Some(next) = ops.peek()
            && (Arc::ptr_eq(&next.columns, &chunk[0].columns) || next.columns == chunk[0].columns)
        {
            chunk.push(ops.next().expect("peeked"));
        }
        let columns = chunk[0].columns.clone();
        let mut metas = Vec::with_capacity(chunk.len());
        let mut operations = Vec::with_capacity(chunk.len());
        for op in chunk {
            let PendingOp { position, key, columns, operation, attempts, queued } = op;
            operations.push(operation);
            metas.push((position, key, columns, attempts, queued));
        }
        let batch = OperationBatch { columns: columns.to_vec(), operations };
        let result = destination.apply(&batch);
        let rebuild =
            |operations: Vec<Operation>, metas: Vec<OpMeta>| {
                operations.into_iter().zip(metas).map(|(operation, (position, key, columns, attempts, queued))| {
                    PendingOp { position, key, columns, operation, attempts, queued }
                })
            };
        match result {
            Ok(results) => outcome.done.extend(rebuild(batch.operations, metas).zip(results)),
            // A transient failure of the whole call: each operation in it
            // failed transiently and goes to the retry queue.
            Err(PluginError::Returned { error: error @ WitError::Transient(_), .. }) => {
                outcome.done.extend(rebuild(batch.operations, metas).map(|op| (op, Err(error.clone()))));
            }
            Err(error) => {
                stop.store(true, Ordering::Relaxed);
                outcome.halt = Some(error);
                break;
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_lane_and_keys_spread_over_lanes() {
        assert_eq!(lane_of("student-42", 4), lane_of("student-42", 4));
        // The value is part of the contract with the file destination's shards.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[lane_of(&format!("k{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert!((0..100).all(|i| lane_of(&format!("k{i}"), 1) == 0));
    }
}
