//! The hosts sharing one state store, and which pipelines this one runs.
//!
//! Every daemon beats into the store every sixth of `lease_time`, counting
//! as live for half of it, and learns the live hosts from it: a dead host's
//! pipelines find a new owner within half the lease time, about when the
//! leases of its runs in flight end. A pipeline belongs to the live host that ranks
//! highest for it by rendezvous hashing: each host scores every pipeline
//! with a hash of both names, so a joining host takes about 1/N of the
//! pipelines, and a leaving or dead host's pipelines spread over the rest,
//! without any host coordinating with another. Ownership only says who
//! tries: the pipeline's lease (see [`crate::state::Lease`]) decides who
//! runs, so two hosts that briefly disagree about the live set (one has not
//! yet seen a join) still never run a pipeline at once.
//!
//! Mid-rollout, a pipeline belongs among the hosts that serve the version of
//! its tenant it last ran (its lease records it), while any does: the hosts
//! that already have a new version leave it to them (see
//! [`crate::sync::SyncJob`]'s rollout check, which holds for manual runs too).
//!
//! On a single host (SQLite, or one daemon on PostgreSQL) the fleet is that
//! host, which owns everything.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest, Sha256};

use crate::runtime::Runtime;
use crate::state::{HostInfo, PipelineId};

pub struct Fleet {
    /// This host's `host_id`.
    me: String,
    /// The live hosts at the last heartbeat, this one included, by id.
    live: RwLock<Vec<HostInfo>>,
    /// The version of its tenant each pipeline last ran, at the last heartbeat.
    recorded: RwLock<HashMap<PipelineId, String>>,
}

impl Fleet {
    pub(super) fn new(me: &str) -> Fleet {
        Fleet { me: me.to_string(), live: RwLock::default(), recorded: RwLock::default() }
    }

    /// Whether this host is the one to run `pipeline` now: the one ranking
    /// highest among the live hosts that serve the version it last ran, or
    /// among all live hosts if none does.
    pub fn owns(&self, pipeline: &PipelineId) -> bool {
        let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
        let recorded = self.recorded.read().unwrap_or_else(PoisonError::into_inner);
        let serving = |host: &&HostInfo| {
            recorded.get(pipeline).is_none_or(|version| host.versions.get(&pipeline.tenant) == Some(version))
        };
        let candidates: Vec<&str> = match live.iter().filter(serving).map(|h| h.id.as_str()).collect::<Vec<_>>() {
            serving if !serving.is_empty() => serving,
            _ => live.iter().map(|h| h.id.as_str()).collect(),
        };
        owner(candidates.into_iter(), pipeline).is_none_or(|owner| owner == self.me)
    }

    /// The live hosts at the last heartbeat.
    pub fn hosts(&self) -> Vec<HostInfo> {
        self.live.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Beats once: records this host as live for half of `lease_time`, with
    /// the number of pipelines it owns, and learns the live hosts.
    pub(super) fn beat(&self, runtime: &Runtime) {
        let tenants = runtime.tenants();
        let owned = tenants
            .iter()
            .flat_map(|t| t.config.pipelines.keys().map(|p| PipelineId::new(&t.config.name, p)))
            .filter(|p| self.owns(p))
            .count() as u64;
        let versions: BTreeMap<String, String> =
            tenants.iter().map(|t| (t.config.name.clone(), t.config.version_digest.clone())).collect();
        let beat = runtime.state.heartbeat(&self.me, runtime.host.lease_time / 2, owned, &versions);
        match beat.and_then(|()| runtime.state.leases()) {
            Ok(leases) => {
                let recorded = leases.into_iter().filter_map(|l| Some((l.pipeline, l.version?))).collect();
                *self.recorded.write().unwrap_or_else(PoisonError::into_inner) = recorded;
            }
            Err(e) => tracing::warn!("cannot read the pipelines' leases: {e}"),
        }
        match runtime.state.hosts() {
            Ok(live) => {
                let before = std::mem::replace(&mut *self.live.write().unwrap_or_else(PoisonError::into_inner), live);
                let now = self.hosts();
                if before.iter().map(|h| &h.id).ne(now.iter().map(|h| &h.id)) {
                    let ids: Vec<&str> = now.iter().map(|h| h.id.as_str()).collect();
                    tracing::info!(hosts = ids.join(", "), "the live hosts changed; pipelines are spread over them");
                }
            }
            // Until a beat goes through, this host goes on with the hosts it
            // knew: the leases keep two from running one pipeline.
            Err(e) => tracing::warn!("cannot record this host's heartbeat: {e}"),
        }
    }

    /// Beats every sixth of `lease_time` until `shutdown`, then leaves the
    /// fleet so that the others take its pipelines at once.
    pub(super) async fn beat_until(
        self: Arc<Fleet>,
        runtime: Arc<Runtime>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let every = runtime.host.lease_time / 6;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => break,
            }
            let (fleet, runtime) = (self.clone(), runtime.clone());
            let _ = tokio::task::spawn_blocking(move || fleet.beat(&runtime)).await;
        }
        let (me, state) = (self.me.clone(), runtime.state.clone());
        let left = tokio::task::spawn_blocking(move || state.leave(&me)).await;
        if let Ok(Err(e)) = left {
            tracing::warn!("cannot leave the fleet (the others see this host gone when its heartbeat ends): {e}");
        }
    }
}

/// The host among `hosts` that ranks highest for `pipeline`, if any.
fn owner<'a>(hosts: impl Iterator<Item = &'a str>, pipeline: &PipelineId) -> Option<&'a str> {
    hosts.max_by_key(|host| score(host, pipeline))
}

/// A host's rendezvous score for a pipeline: the first 8 bytes of a hash of
/// both, so that every host computes the same ranking.
fn score(host: &str, pipeline: &PipelineId) -> u64 {
    let digest = Sha256::new()
        .chain_update(host.as_bytes())
        .chain_update([0])
        .chain_update(pipeline.tenant.as_bytes())
        .chain_update([0])
        .chain_update(pipeline.pipeline.as_bytes())
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("a sha256 has 8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipelines(n: usize) -> Vec<PipelineId> {
        (0..n).map(|i| PipelineId::new(&format!("tenant{}", i % 50), &format!("p{i}"))).collect()
    }

    #[test]
    fn every_pipeline_has_one_owner_and_the_hosts_share_them_about_evenly() {
        let hosts = ["a:1", "b:2", "c:3", "d:4"];
        let pipelines = pipelines(2000);
        let mut load = std::collections::BTreeMap::new();
        for pipeline in &pipelines {
            *load.entry(owner(hosts.iter().copied(), pipeline).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(load.len(), 4);
        for (host, count) in &load {
            assert!((400..=600).contains(count), "{host} owns {count} of 2000: {load:?}");
        }
    }

    #[test]
    fn a_joining_host_takes_about_a_share_and_nothing_else_moves() {
        let before = ["a:1", "b:2", "c:3"];
        let after = ["a:1", "b:2", "c:3", "d:4"];
        let pipelines = pipelines(2000);
        let mut moved = 0;
        for pipeline in &pipelines {
            let (was, is) = (owner(before.iter().copied(), pipeline), owner(after.iter().copied(), pipeline));
            if was != is {
                assert_eq!(is, Some("d:4"), "a pipeline moved between two old hosts");
                moved += 1;
            }
        }
        assert!((400..=600).contains(&moved), "{moved} of 2000 moved to the new host");
    }

    fn host(id: &str, version: &str) -> HostInfo {
        HostInfo {
            id: id.into(),
            started_at: String::new(),
            expires_at_ms: 0,
            pipelines: 0,
            versions: BTreeMap::from([("acme".to_string(), version.to_string())]),
        }
    }

    #[test]
    fn mid_rollout_a_pipeline_stays_with_the_hosts_serving_the_version_it_last_ran() {
        let pipelines: Vec<PipelineId> = (0..200).map(|i| PipelineId::new("acme", &format!("p{i}"))).collect();
        let fleets: Vec<Fleet> = ["a:1", "b:2", "c:3"].iter().map(|id| Fleet::new(id)).collect();
        for fleet in &fleets {
            *fleet.live.write().unwrap() = vec![host("a:1", "v2"), host("b:2", "v1"), host("c:3", "v1")];
            *fleet.recorded.write().unwrap() = pipelines.iter().map(|p| (p.clone(), "v1".to_string())).collect();
        }
        for pipeline in &pipelines {
            let owners: Vec<&str> = fleets.iter().filter(|f| f.owns(pipeline)).map(|f| f.me.as_str()).collect();
            assert_eq!(owners.len(), 1, "{pipeline}: {owners:?}");
            assert_ne!(owners[0], "a:1", "{pipeline} went to the host on the new version mid-rollout");
        }
        // Once every host has the new version, they share the pipelines again.
        for fleet in &fleets {
            *fleet.live.write().unwrap() = vec![host("a:1", "v2"), host("b:2", "v2"), host("c:3", "v2")];
        }
        assert!(pipelines.iter().any(|p| fleets[0].owns(p)));
    }

    #[test]
    fn with_no_hosts_known_yet_this_host_owns_everything() {
        let fleet = Fleet::new("a:1");
        assert!(fleet.owns(&PipelineId::new("acme", "orders")));
    }
}
