//! Fencing out stale writers. Each pipeline is run by one host at a time,
//! under a lease whose token grows with every new holder (`host.run-fence`); a
//! host that stalled mid-apply (paused, swapped out) may lose its lease to
//! another and still finish, when it resumes, the writes it had begun, over
//! the new holder's. So each shard keeps, beside its files, the highest token
//! it was written under for each lease scope (`fence-NNN.json`, a JSON object
//! of scope → token), and refuses a write under a lower token of the same
//! scope. The check and the write it allows hold the shard's lock, so no
//! write of a newer holder comes between them.

use std::collections::BTreeMap;

use synchost_plugin_sdk::{self as sdk, Error, host::Fence};

use crate::files::write_atomically;

/// Admits a write under `fence` to the shard whose fences are at `path`
/// (the caller holds the shard's lock): raises the shard's token for the
/// fence's scope to the fence's, or refuses the write if the shard was
/// already written under a newer one.
pub(crate) fn admit(path: &str, fence: &Fence) -> Result<(), Error> {
    let mut fences: BTreeMap<String, u64> = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::Config(format!(
                "`{path}` is damaged ({e}); it only guards against stale writers, so removing it loses nothing"
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(sdk::io_error(&format!("cannot read `{path}`"), e)),
    };
    match fences.get(&fence.scope) {
        // Refused as transient: the stale run is stopping anyway (its state
        // writes are refused too), and the new holder applies these
        // operations itself. Logged too, so that an operator sees in the
        // host's log that a stale writer was kept out.
        Some(&newest) if newest > fence.token => {
            let refusal = format!(
                "this run's lease (token {}) has passed to another holder, which wrote here under token {newest} \
                 (`{path}`): this write is refused",
                fence.token
            );
            sdk::log::warn(&refusal);
            Err(Error::Transient(refusal))
        }
        Some(&newest) if newest == fence.token => Ok(()),
        _ => {
            fences.insert(fence.scope.clone(), fence.token);
            let text = serde_json::to_vec(&fences).expect("fences serialise");
            write_atomically(path, &text, false)
        }
    }
}
