//! Which lane a key goes to.
//!
//! Syncs apply their operations in parallel lanes (a pipeline's `lanes`), a
//! key always in the same lane so its operations keep their order. The lane is [`key_hash`]
//! modulo the lane count. The hash is part of the contract with destinations:
//! one that shards its records by the same hash, with a shard count that is a
//! multiple of the lane count, never has two lanes writing one shard (the
//! bundled file destination does this).

/// FNV-1a of the key's UTF-8 bytes, 64 bits: stable across builds, platforms
/// and versions, unlike std's hasher, so a key keeps its lane and its shard
/// from run to run.
pub fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The lane of `key` among `lanes` lanes (at least one).
pub fn lane_of(key: &str, lanes: usize) -> usize {
    (key_hash(key) % lanes.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_lane_and_keys_spread_over_lanes() {
        // The values are the contract: FNV-1a's published offset basis and
        // the hash of "a".
        assert_eq!(key_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(lane_of("student-42", 4), lane_of("student-42", 4));
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[lane_of(&format!("k{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert!((0..100).all(|i| lane_of(&format!("k{i}"), 1) == 0));
    }
}
