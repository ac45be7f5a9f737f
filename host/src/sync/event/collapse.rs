//! Collapsing a batch's operations per key: events carry a record's full state,
//! so of several operations for one key only the last one matters.

use std::collections::HashMap;

/// Keeps, for each key, only its last item, in the place of that last item,
/// so the surviving items keep their relative order (and a key is never
/// reordered against itself: it appears once). Returns the survivors and how
/// many items were dropped.
pub(super) fn collapse<T>(items: Vec<T>, key: impl Fn(&T) -> &str) -> (Vec<T>, usize) {
    let keep: Vec<bool> = {
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            last.insert(key(item), i);
        }
        items.iter().enumerate().map(|(i, item)| last[key(item)] == i).collect()
    };
    let before = items.len();
    let kept: Vec<T> = items.into_iter().zip(keep).filter_map(|(item, keep)| keep.then_some(item)).collect();
    let dropped = before - kept.len();
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_operation_per_key_wins_in_its_own_place() {
        let items = vec![("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("a", 3)];
        let (kept, dropped) = collapse(items, |(k, _)| k);
        assert_eq!(kept, vec![("c", 1), ("b", 2), ("a", 3)]);
        assert_eq!(dropped, 3);
    }

    #[test]
    fn a_delete_after_an_upsert_is_what_remains() {
        let items = vec![("k", "upsert"), ("k", "delete")];
        assert_eq!(collapse(items, |(k, _)| k).0, vec![("k", "delete")]);
        let items = vec![("k", "delete"), ("k", "upsert")];
        assert_eq!(collapse(items, |(k, _)| k).0, vec![("k", "upsert")]);
    }

    #[test]
    fn distinct_keys_are_left_alone() {
        let items: Vec<(String, u32)> = (0..100).map(|i| (format!("k{i}"), i)).collect();
        let (kept, dropped) = collapse(items.clone(), |(k, _)| k);
        assert_eq!((kept, dropped), (items, 0));
        assert_eq!(collapse(Vec::<(String, u32)>::new(), |(k, _)| k).1, 0);
    }
}
