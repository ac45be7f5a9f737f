//! A table as a plugin may hand one back: any column names, keys, kinds, ends
//! and bytes. Whatever `Table::check` lets through, the host reads everywhere
//! (keys, values, hashes, row copies, selections) without a panic, and lays out
//! again as the same table; what it refuses, it refuses with a reason.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use synchost::sync::values::{cell_hash, value_hash};
use synchost_model::{Column, Kind, Table};

/// Where each value ends: as given, or built from lengths so that most inputs
/// get past the first checks and reach the per-value ones.
#[derive(Arbitrary, Debug)]
enum Ends {
    Raw(Vec<u32>),
    Lengths(Vec<u8>),
}

impl Ends {
    fn resolve(self) -> Vec<u32> {
        match self {
            Ends::Raw(ends) => ends,
            Ends::Lengths(lengths) => lengths
                .iter()
                .scan(0u32, |end, &len| {
                    *end += u32::from(len);
                    Some(*end)
                })
                .collect(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct RawColumn {
    kinds: Vec<u8>,
    ends: Ends,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct RawTable {
    columns: Vec<String>,
    key_data: String,
    key_ends: Ends,
    values: Vec<RawColumn>,
}

const KINDS: [Kind; 7] = [Kind::Null, Kind::Boolean, Kind::Integer, Kind::Float, Kind::Text, Kind::Bytes, Kind::Json];

fuzz_target!(|raw: RawTable| {
    let table = Table {
        columns: raw.columns,
        key_data: raw.key_data,
        key_ends: raw.key_ends.resolve(),
        values: raw
            .values
            .into_iter()
            .map(|c| Column {
                kinds: c.kinds.iter().map(|k| KINDS[usize::from(*k) % KINDS.len()]).collect(),
                ends: c.ends.resolve(),
                data: c.data,
            })
            .collect(),
    };
    if let Err(reason) = table.check() {
        assert!(!reason.is_empty(), "a refusal names its reason");
        return;
    }
    for row in 0..table.len() {
        let _ = table.key(row);
        for column in &table.values {
            let value = column.get(row);
            assert_eq!(cell_hash(column, row), value_hash(value), "a cell hashes as its value");
            let _ = value.to_text();
            let _ = value.to_string();
        }
    }
    let _ = table.payload_bytes();
    assert_eq!(Table::from_rows(table.columns.clone(), &table.to_rows()), table, "rows lay out again as the table");
    let backwards: Vec<u32> = (0..table.len() as u32).rev().collect();
    let selected = table.select(&backwards);
    assert_eq!(selected.check(), Ok(()), "a selection of a checked table is a checked table");
    assert_eq!(selected.len(), table.len());
});
