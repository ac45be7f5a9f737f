//! Planning a diff: the destination indexed by key (with a hash per owned
//! field, not the rows themselves), the desired rows streamed past it, and
//! the guards that decide whether the plan may be applied.
//!
//! Memory grows with the number of destination records (a key and a few hashes
//! each) and with the number of changes, never with the unchanged rows.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::super::values::{cell_hash, value_hash};
use crate::config::{Deletes, DiffPolicy};
use synchost_model::ValueRef;
use synchost_model::value_to_json;
use synchost_model::{Row, RowUpdate, Table};

/// What a diff run will do, by key; every list sorted by key.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The owned fields, in the order of every row's values.
    pub columns: Vec<String>,
    pub creates: Vec<Row>,
    pub updates: Vec<RowUpdate>,
    pub deletes: Vec<String>,
    pub unchanged: u64,
    /// Rows held back because they collide on a unique field.
    pub held: Vec<Conflict>,
    pub desired_rows: u64,
    pub destination_rows: u64,
    /// A digest of the destination's owned fields when the plan was made: an
    /// approved plan is applied only to the destination it was made for.
    pub fingerprint: u64,
}

impl Plan {
    pub fn changes(&self) -> u64 {
        self.writes() + self.deletes.len() as u64
    }

    /// Creates and updates.
    pub fn writes(&self) -> u64 {
        (self.creates.len() + self.updates.len()) as u64
    }

    /// The share of the destination the plan changes. Against an empty
    /// destination it is 0: an initial load changes nothing that exists.
    pub fn change_ratio(&self) -> f64 {
        if self.destination_rows == 0 { 0.0 } else { self.changes() as f64 / self.destination_rows as f64 }
    }

    /// A digest of what the plan would do (every create, update and delete,
    /// with the values it would write) and of the destination it was made
    /// for: two plans with the same digest do the same thing. Order-free.
    pub fn digest(&self) -> u64 {
        let op = |tag: u8, key: &str, values: &[synchost_model::Value]| {
            let mut bytes = Vec::with_capacity(1 + key.len() + 1 + values.len() * 8);
            bytes.push(tag);
            bytes.extend_from_slice(key.as_bytes());
            bytes.push(0);
            for value in values {
                bytes.extend_from_slice(&value_hash(value.into()).to_le_bytes());
            }
            xxh3_64_with_seed(&bytes, 0x9a11)
        };
        let creates = self.creates.iter().map(|row| op(b'c', &row.key, &row.values));
        let updates = self.updates.iter().map(|update| op(b'u', &update.row.key, &update.row.values));
        let deletes = self.deletes.iter().map(|key| op(b'd', key, &[]));
        creates.chain(updates).chain(deletes).fold(self.fingerprint, u64::wrapping_add)
    }

    /// Takes the operations on keys `leave` holds out of the plan, and
    /// returns them as a plan of their own (for the same destination).
    pub fn split_off(&mut self, leave: impl Fn(&str) -> bool) -> Plan {
        let (left_creates, creates) = std::mem::take(&mut self.creates).into_iter().partition(|r| leave(&r.key));
        let (left_updates, updates) =
            std::mem::take(&mut self.updates).into_iter().partition(|u: &RowUpdate| leave(&u.row.key));
        let (left_deletes, deletes) = std::mem::take(&mut self.deletes).into_iter().partition(|k| leave(k));
        (self.creates, self.updates, self.deletes) = (creates, updates, deletes);
        Plan {
            columns: self.columns.clone(),
            creates: left_creates,
            updates: left_updates,
            deletes: left_deletes,
            unchanged: 0,
            held: Vec::new(),
            desired_rows: self.desired_rows,
            destination_rows: self.destination_rows,
            fingerprint: self.fingerprint,
        }
    }

    /// Why the plan must wait for an operator, if it must.
    pub fn blocked_reason(&self, policy: &DiffPolicy) -> Option<String> {
        let ratio = self.change_ratio();
        (ratio > policy.max_change_ratio).then(|| {
            format!(
                "the plan changes {} of {} destination records ({:.1}%), more than max_change_ratio allows ({:.1}%)",
                self.changes(),
                self.destination_rows,
                ratio * 100.0,
                policy.max_change_ratio * 100.0
            )
        })
    }
}

/// Two rows that would hold the same value in a field declared unique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Conflict {
    /// The row held back.
    pub key: String,
    /// The row it collides with (desired, or a destination record the sync leaves alone).
    pub other: String,
    pub field: String,
    pub value: String,
}

/// A planning failure that stops the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("key `{0}` appears more than once in the desired state; keys must be unique")]
    DuplicateKey(String),
    /// The destination's snapshot broke the contract: which of two records
    /// is the real one cannot be known, so nothing is planned against it.
    #[error("the destination's snapshot holds key `{0}` more than once; a snapshot must list each record once")]
    DuplicateDestinationKey(String),
    #[error("owned field `{field}` is not among the fields the transforms emit ({emitted})")]
    OwnedFieldMissing { field: String, emitted: String },
    #[error("unique field `{0}` is not an owned field; only owned fields can be kept unique")]
    UniqueNotOwned(String),
}

/// The destination, indexed: key → row number; per row one hash per owned field.
pub struct DestinationIndex {
    columns: Vec<String>,
    rows: HashMap<Box<str>, u32>,
    hashes: Vec<u64>,
    fingerprint: u64,
    /// The bytes of every key indexed, for [`DestinationIndex::approx_bytes`].
    key_bytes: u64,
}

/// What one entry of a key → row map costs beside its key's bytes: the boxed
/// key and row number in the table, the allocation's own overhead, the map's
/// spare room. An estimate, for run budgets.
const PER_KEY_BYTES: u64 = 48;

impl DestinationIndex {
    pub fn new(owned: &[String]) -> DestinationIndex {
        DestinationIndex {
            columns: owned.to_vec(),
            rows: HashMap::new(),
            hashes: Vec::new(),
            fingerprint: 0,
            key_bytes: 0,
        }
    }

    /// Adds a page of destination records; fields it lacks count as null.
    /// A key already indexed (from this page or an earlier one) is an error.
    pub fn add_page(&mut self, page: &Table) -> Result<(), PlanError> {
        let positions = page.column_positions();
        let columns: Vec<Option<_>> =
            self.columns.iter().map(|c| positions.get(c.as_str()).map(|&i| &page.values[i])).collect();
        let null = value_hash(ValueRef::Null);
        let mut hashes = Vec::with_capacity(self.columns.len());
        for row in 0..page.len() {
            let key = page.key(row);
            hashes.clear();
            hashes.extend(columns.iter().map(|c| c.map_or(null, |c| cell_hash(c, row))));
            let digest = row_digest(key, &hashes);
            if self.rows.insert(key.into(), self.rows.len() as u32).is_some() {
                return Err(PlanError::DuplicateDestinationKey(key.to_string()));
            }
            self.key_bytes += key.len() as u64;
            self.hashes.extend_from_slice(&hashes);
            self.fingerprint = self.fingerprint.wrapping_add(digest);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// About how much memory the index holds, for `max_run_memory`.
    pub fn approx_bytes(&self) -> u64 {
        self.key_bytes + self.rows.len() as u64 * PER_KEY_BYTES + self.hashes.len() as u64 * 8
    }

    fn hashes_of(&self, index: u32) -> &[u64] {
        let width = self.columns.len();
        &self.hashes[index as usize * width..(index as usize + 1) * width]
    }
}

/// About what a row copied out of its page costs in memory.
fn row_footprint(row: &Row) -> u64 {
    let values: u64 = row
        .values
        .iter()
        .map(|value| match value {
            synchost_model::Value::Text(text) | synchost_model::Value::Json(text) => text.len() as u64,
            synchost_model::Value::Bytes(bytes) => bytes.len() as u64,
            _ => 0,
        })
        .sum();
    // The row and its key (String, Vec) and a Value enum per field.
    64 + row.key.len() as u64 + values + 32 * row.values.len() as u64
}

impl HashedRows {
    /// About how much memory the rows hold while they wait for the index.
    pub fn approx_bytes(&self) -> u64 {
        self.table.payload_bytes() + self.hashes.len() as u64 * 8 + self.table.len() as u64 * 16
    }
}

/// An order-independent digest of one record: fingerprints are sums of these.
fn row_digest(key: &str, hashes: &[u64]) -> u64 {
    let mut bytes = Vec::with_capacity(key.len() + hashes.len() * 8);
    bytes.extend_from_slice(key.as_bytes());
    for hash in hashes {
        bytes.extend_from_slice(&hash.to_le_bytes());
    }
    xxh3_64_with_seed(&bytes, 7)
}

/// Desired rows with their owned fields hashed: hashing needs only the owned
/// fields, so it can go on while the destination is still being read.
pub struct HashedRows {
    owned: Vec<String>,
    table: Table,
    /// Where each owned field is among the table's columns.
    positions: Vec<usize>,
    /// Row by row, one hash per owned field.
    hashes: Vec<u64>,
}

impl HashedRows {
    /// Hashes the `owned` fields of `table`, which must have them all.
    pub fn new(owned: &[String], table: Table) -> Result<HashedRows, PlanError> {
        let columns = table.column_positions();
        let positions = owned
            .iter()
            .map(|field| {
                columns.get(field.as_str()).copied().ok_or_else(|| PlanError::OwnedFieldMissing {
                    field: field.clone(),
                    emitted: table.columns.join(", "),
                })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let mut hashes = Vec::with_capacity(table.len() * positions.len());
        for row in 0..table.len() {
            hashes.extend(positions.iter().map(|&i| cell_hash(&table.values[i], row)));
        }
        Ok(HashedRows { owned: owned.to_vec(), table, positions, hashes })
    }
}

/// Streams desired rows past the destination index and builds the plan.
pub struct Planner {
    destination: DestinationIndex,
    unique: Vec<(usize, String)>,
    seen: Vec<bool>,
    creates: Vec<Row>,
    created_keys: HashSet<Box<str>>,
    updates: Vec<RowUpdate>,
    unchanged: u64,
    desired_rows: u64,
    /// Per unique field: value hash → the first desired key holding it.
    unique_values: Vec<HashMap<u64, Box<str>>>,
    /// Keys in a collision, with what they collide with.
    conflicts: HashMap<String, Conflict>,
    /// About how much the creates and updates hold, for `max_run_memory`.
    kept_bytes: u64,
}

impl Planner {
    pub fn new(destination: DestinationIndex, policy: &DiffPolicy) -> Result<Planner, PlanError> {
        let mut unique = Vec::new();
        for field in &policy.unique {
            let position = destination
                .columns
                .iter()
                .position(|c| c == field)
                .ok_or_else(|| PlanError::UniqueNotOwned(field.clone()))?;
            unique.push((position, field.clone()));
        }
        let rows = destination.len();
        Ok(Planner {
            unique_values: vec![HashMap::new(); unique.len()],
            unique,
            seen: vec![false; rows],
            destination,
            creates: Vec::new(),
            created_keys: HashSet::new(),
            updates: Vec::new(),
            unchanged: 0,
            desired_rows: 0,
            conflicts: HashMap::new(),
            kept_bytes: 0,
        })
    }

    /// About how much memory the plan holds so far (the destination's index
    /// and the changes), for `max_run_memory`.
    pub fn approx_bytes(&self) -> u64 {
        self.destination.approx_bytes() + self.seen.len() as u64 + self.kept_bytes
    }

    /// How many records the destination holds.
    pub fn destination_rows(&self) -> u64 {
        self.destination.len() as u64
    }

    /// Adds desired rows. They are read in place: only the rows that change
    /// are copied out, with their owned values.
    pub fn add(&mut self, desired: &HashedRows) -> Result<(), PlanError> {
        assert_eq!(desired.owned, self.destination.columns, "rows hashed for other owned fields");
        let rows = &desired.table;
        let columns: Vec<_> = desired.positions.iter().map(|&i| &rows.values[i]).collect();
        let project =
            |row: usize| Row { key: rows.key(row).to_string(), values: columns.iter().map(|c| c.value(row)).collect() };
        let width = columns.len();
        for row in 0..rows.len() {
            let key = rows.key(row);
            let hashes = &desired.hashes[row * width..(row + 1) * width];
            self.desired_rows += 1;
            if !self.unique.is_empty() {
                let values: Vec<ValueRef<'_>> = columns.iter().map(|c| c.get(row)).collect();
                self.check_unique(key, &values, hashes);
            }
            match self.destination.rows.get(key).copied() {
                Some(index) => {
                    if std::mem::replace(&mut self.seen[index as usize], true) {
                        return Err(PlanError::DuplicateKey(key.to_string()));
                    }
                    let current = self.destination.hashes_of(index);
                    if hashes == current {
                        self.unchanged += 1;
                        continue;
                    }
                    let changed = hashes
                        .iter()
                        .zip(current)
                        .zip(&self.destination.columns)
                        .filter(|((new, old), _)| new != old)
                        .map(|(_, name)| name.clone())
                        .collect();
                    let update = RowUpdate { row: project(row), changed };
                    self.kept_bytes +=
                        row_footprint(&update.row) + update.changed.iter().map(|c| c.len() as u64 + 24).sum::<u64>();
                    self.updates.push(update);
                }
                None => {
                    if !self.created_keys.insert(key.into()) {
                        return Err(PlanError::DuplicateKey(key.to_string()));
                    }
                    let create = project(row);
                    self.kept_bytes += row_footprint(&create) + PER_KEY_BYTES + key.len() as u64;
                    self.creates.push(create);
                }
            }
        }
        Ok(())
    }

    /// `values` and `hashes` are a desired row's owned fields.
    fn check_unique(&mut self, key: &str, values: &[ValueRef<'_>], hashes: &[u64]) {
        for (u, (owned_index, field)) in self.unique.iter().enumerate() {
            let value = values[*owned_index];
            if value == ValueRef::Null {
                continue;
            }
            let hash = hashes[*owned_index];
            match self.unique_values[u].get(&hash) {
                Some(first) if **first != *key => {
                    let value = value_to_json(&value.to_value()).to_string();
                    let first = first.to_string();
                    self.conflicts.entry(key.to_string()).or_insert_with(|| Conflict {
                        key: key.to_string(),
                        other: first.clone(),
                        field: field.clone(),
                        value: value.clone(),
                    });
                    self.conflicts.entry(first.clone()).or_insert_with(|| Conflict {
                        key: first,
                        other: key.to_string(),
                        field: field.clone(),
                        value,
                    });
                }
                Some(_) => {}
                None => {
                    self.unique_values[u].insert(hash, key.into());
                }
            }
        }
    }

    /// Completes the plan. `managed` is the set of keys this pipeline created
    /// (needed only for `deletes = "managed"`).
    pub fn finish(mut self, policy: &DiffPolicy, managed: Option<&HashSet<String>>) -> Plan {
        let destination_rows = self.destination.len() as u64;
        let mut deletes = Vec::new();
        let mut remaining: Vec<&str> = Vec::new();
        for (key, &index) in &self.destination.rows {
            if self.seen[index as usize] {
                continue;
            }
            let delete = match policy.deletes {
                Deletes::Mirror => true,
                Deletes::Managed => managed.is_some_and(|m| m.contains(&**key)),
                Deletes::Never => false,
            };
            if delete { deletes.push(key.to_string()) } else { remaining.push(key) }
        }

        // Records the sync leaves in place keep their unique values: a desired
        // row that would take one of them is held back too.
        for (u, (position, field)) in self.unique.iter().enumerate() {
            for key in &remaining {
                let index = self.destination.rows[*key];
                let hash = self.destination.hashes_of(index)[*position];
                if hash == value_hash(ValueRef::Null) {
                    continue;
                }
                if let Some(desired) = self.unique_values[u].get(&hash) {
                    self.conflicts.entry(desired.to_string()).or_insert_with(|| Conflict {
                        key: desired.to_string(),
                        other: key.to_string(),
                        field: field.clone(),
                        value: "(held by a destination record)".into(),
                    });
                }
            }
        }
        let conflicts = std::mem::take(&mut self.conflicts);
        let mut held: Vec<Conflict> = Vec::new();
        self.creates.retain(|row| match conflicts.get(&row.key) {
            Some(conflict) => {
                held.push(conflict.clone());
                false
            }
            None => true,
        });
        self.updates.retain(|update| match conflicts.get(&update.row.key) {
            Some(conflict) => {
                held.push(conflict.clone());
                false
            }
            None => true,
        });

        self.creates.sort_by(|a, b| a.key.cmp(&b.key));
        self.updates.sort_by(|a, b| a.row.key.cmp(&b.row.key));
        deletes.sort();
        held.sort_by(|a, b| a.key.cmp(&b.key));
        Plan {
            columns: self.destination.columns.clone(),
            creates: self.creates,
            updates: self.updates,
            deletes,
            unchanged: self.unchanged,
            held,
            desired_rows: self.desired_rows,
            destination_rows,
            fingerprint: self.destination.fingerprint,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use synchost_model::Value;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|c| c.to_string()).collect()
    }

    fn row(key: &str, values: &[&str]) -> Row {
        Row { key: key.into(), values: values.iter().map(|v| Value::Text(v.to_string())).collect() }
    }

    fn table(columns: &[&str], rows: &[Row]) -> Table {
        Table::from_rows(cols(columns), rows)
    }

    fn plan_for(policy: &DiffPolicy, desired: Vec<Row>, actual: Vec<Row>, managed: Option<&HashSet<String>>) -> Plan {
        let columns = ["name", "email"];
        let mut index = DestinationIndex::new(&cols(&columns));
        index.add_page(&table(&columns, &actual)).unwrap();
        let mut planner = Planner::new(index, policy).unwrap();
        planner.add(&HashedRows::new(&cols(&columns), table(&columns, &desired)).unwrap()).unwrap();
        planner.finish(policy, managed)
    }

    #[test]
    fn plans_creates_updates_with_changed_fields_deletes_and_unchanged() {
        let plan = plan_for(
            &DiffPolicy::default(),
            vec![row("1", &["ann", "a@x"]), row("2", &["bob", "b@y"]), row("3", &["cy", "c@x"])],
            vec![row("1", &["ann", "a@x"]), row("2", &["bob", "b@x"]), row("9", &["old", "o@x"])],
            None,
        );
        assert_eq!(plan.creates.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["3"]);
        assert_eq!(plan.updates.len(), 1);
        assert_eq!((plan.updates[0].row.key.as_str(), plan.updates[0].changed.clone()), ("2", cols(&["email"])));
        assert_eq!(plan.deletes, ["9"]);
        assert_eq!(plan.unchanged, 1);
        assert_eq!(plan.change_ratio(), 1.0);
    }

    #[test]
    fn a_destination_snapshot_that_lists_a_key_twice_is_refused() {
        let owned = cols(&["name"]);
        let mut index = DestinationIndex::new(&owned);
        index.add_page(&table(&["name"], &[row("1", &["ann"]), row("2", &["bob"])])).unwrap();
        // On a later page, as a paging bug would repeat it.
        let again = index.add_page(&table(&["name"], &[row("3", &["cy"]), row("1", &["ann"])]));
        assert_eq!(again, Err(PlanError::DuplicateDestinationKey("1".into())));
        let within = DestinationIndex::new(&owned).add_page(&table(&["name"], &[row("9", &["a"]), row("9", &["b"])]));
        assert_eq!(within, Err(PlanError::DuplicateDestinationKey("9".into())));
    }

    #[test]
    fn fields_the_sync_does_not_own_are_ignored() {
        let owned = cols(&["name"]);
        let mut index = DestinationIndex::new(&owned);
        index.add_page(&table(&["name", "note"], &[row("1", &["ann", "hand-written"])])).unwrap();
        let mut planner = Planner::new(index, &DiffPolicy::default()).unwrap();
        // The desired rows carry a field the sync does not own, first.
        let desired = table(&["note", "name"], &[row("1", &["typed by the source", "ann"])]);
        planner.add(&HashedRows::new(&owned, desired).unwrap()).unwrap();
        let plan = planner.finish(&DiffPolicy::default(), None);
        assert_eq!((plan.changes(), plan.unchanged), (0, 1));

        assert!(matches!(
            HashedRows::new(&owned, table(&["nickname"], &[])),
            Err(PlanError::OwnedFieldMissing { field, .. }) if field == "name"
        ));
        let mut planner = Planner::new(DestinationIndex::new(&owned), &DiffPolicy::default()).unwrap();
        let once = |value| HashedRows::new(&owned, table(&["name"], &[row("1", &[value])])).unwrap();
        planner.add(&once("x")).unwrap();
        assert_eq!(planner.add(&once("y")), Err(PlanError::DuplicateKey("1".into())));
    }

    #[test]
    fn delete_policies_decide_what_may_go() {
        let desired = || vec![row("1", &["ann", "a@x"])];
        let actual = || vec![row("1", &["ann", "a@x"]), row("2", &["bob", "b@x"]), row("3", &["cy", "c@x"])];
        let managed: HashSet<String> = ["3".to_string()].into();
        let with = |deletes| DiffPolicy { deletes, ..DiffPolicy::default() };
        assert_eq!(plan_for(&with(Deletes::Mirror), desired(), actual(), Some(&managed)).deletes, ["2", "3"]);
        assert_eq!(plan_for(&with(Deletes::Managed), desired(), actual(), Some(&managed)).deletes, ["3"]);
        assert!(plan_for(&with(Deletes::Never), desired(), actual(), Some(&managed)).deletes.is_empty());
    }

    #[test]
    fn colliding_unique_values_are_held_back_with_both_keys() {
        let policy = DiffPolicy { unique: cols(&["email"]), deletes: Deletes::Never, ..DiffPolicy::default() };
        let plan = plan_for(
            &policy,
            vec![
                row("1", &["ann", "same@x"]),
                row("2", &["bob", "same@x"]),
                row("3", &["cy", "taken@x"]),
                row("4", &["di", "d@x"]),
            ],
            vec![row("9", &["hand-made", "taken@x"])],
            None,
        );
        assert_eq!(plan.creates.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["4"]);
        let held: Vec<(&str, &str)> = plan.held.iter().map(|c| (c.key.as_str(), c.other.as_str())).collect();
        assert_eq!(held, [("1", "2"), ("2", "1"), ("3", "9")]);
        assert!(plan.held.iter().all(|c| c.field == "email"));
    }

    #[test]
    fn the_guard_blocks_above_the_ratio_and_not_on_an_empty_destination() {
        let policy = DiffPolicy { max_change_ratio: 0.5, ..DiffPolicy::default() };
        let initial = plan_for(&policy, vec![row("1", &["a", "a"]), row("2", &["b", "b"])], vec![], None);
        assert_eq!(initial.blocked_reason(&policy), None);
        let half = plan_for(
            &policy,
            vec![row("1", &["a", "a"]), row("2", &["b", "x"])],
            vec![row("1", &["a", "a"]), row("2", &["b", "b"])],
            None,
        );
        assert_eq!(half.blocked_reason(&policy), None, "exactly the ratio is allowed");
        let all = plan_for(
            &policy,
            vec![row("1", &["a", "y"]), row("2", &["b", "x"])],
            vec![row("1", &["a", "a"]), row("2", &["b", "b"])],
            None,
        );
        assert!(all.blocked_reason(&policy).unwrap().contains("2 of 2 destination records (100.0%)"));
    }

    /// Applies a plan to a model destination (key → owned values), as a
    /// destination that honours every operation would.
    fn apply_to_model(plan: &Plan, model: &mut BTreeMap<String, Vec<String>>) {
        let text = |r: &Row| {
            r.values
                .iter()
                .map(|v| match v {
                    Value::Text(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        for key in &plan.deletes {
            model.remove(key);
        }
        for update in &plan.updates {
            model.insert(update.row.key.clone(), text(&update.row));
        }
        for create in &plan.creates {
            model.insert(create.key.clone(), text(create));
        }
    }

    fn data_set() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
        prop::collection::btree_map("[a-f]{1,2}", prop::collection::vec("[xyz]{0,2}", 2), 0..30)
    }

    proptest! {
        #[test]
        fn after_applying_the_plan_the_destination_equals_the_desired_state(desired in data_set(), actual in data_set()) {
            let as_rows = |set: &BTreeMap<String, Vec<String>>| set.iter().map(|(k, vs)| row(k, &vs.iter().map(String::as_str).collect::<Vec<_>>())).collect::<Vec<_>>();
            let policy = DiffPolicy::default();
            let plan = plan_for(&policy, as_rows(&desired), as_rows(&actual), None);
            let mut model = actual.clone();
            apply_to_model(&plan, &mut model);
            prop_assert_eq!(&model, &desired);
            prop_assert_eq!(plan.unchanged + plan.updates.len() as u64 + plan.creates.len() as u64, desired.len() as u64);

            // The guard blocks exactly when the changed share exceeds the ratio.
            let changed = desired.iter().filter(|(k, v)| actual.get(*k) != Some(v)).count()
                + actual.keys().filter(|k| !desired.contains_key(*k)).count();
            let blocked = !actual.is_empty() && changed as f64 / actual.len() as f64 > policy.max_change_ratio;
            prop_assert_eq!(plan.blocked_reason(&policy).is_some(), blocked);

            // Planning again against the result changes nothing.
            let again = plan_for(&policy, as_rows(&desired), as_rows(&model), None);
            prop_assert_eq!(again.changes(), 0);
        }
    }
}
