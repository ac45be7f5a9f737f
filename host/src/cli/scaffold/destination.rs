//! {{name}}: a synchost destination. This example keeps its records in
//! memory, for one run, to show what a destination must do: apply creates,
//! updates (of the changed fields only), upserts and deletes, one outcome per
//! operation; take a redelivered operation (same idempotency key) once;
//! reject what can never apply, with the reason; page its records out for
//! diff syncs to compare. Replace `Plugin::records` with your system.

use std::collections::BTreeMap;

use synchost_plugin_sdk::{self as sdk, Action, Error, OperationBatch, Page, PluginInfo, Row, Value};

/// The plugin's `config` table in a tenant file.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Records per snapshot page.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
}

fn default_page_size() -> usize {
    100
}

/// One record: its fields, and the idempotency key of the last operation
/// applied to it.
#[derive(Default)]
struct Record {
    fields: BTreeMap<String, Value>,
    last_operation: String,
}

/// The plugin, made once per run from its config.
pub struct Plugin {
    config: Config,
    records: BTreeMap<String, Record>,
}

impl sdk::Plugin for Plugin {
    type Config = Config;

    fn info() -> PluginInfo {
        sdk::plugin_info("{{name}}", env!("CARGO_PKG_VERSION"), "Keeps records in memory for one run")
    }

    fn new(config: Config) -> Result<Self, Error> {
        if config.page_size == 0 {
            return Err(Error::Config("`page_size` must be more than zero".into()));
        }
        Ok(Plugin { config, records: BTreeMap::new() })
    }
}

impl sdk::Destination for Plugin {
    fn snapshot(&mut self, token: Option<String>) -> Result<Page, Error> {
        let start: usize = match token {
            None => 0,
            Some(token) => token.parse().map_err(|_| Error::Config(format!("page token `{token}` is not mine")))?,
        };
        let columns: Vec<String> = {
            let mut names: Vec<&String> = self.records.values().flat_map(|r| r.fields.keys()).collect();
            names.sort();
            names.dedup();
            names.into_iter().cloned().collect()
        };
        let rows: Vec<Row> = self
            .records
            .iter()
            .skip(start)
            .take(self.config.page_size)
            .map(|(key, record)| Row {
                key: key.clone(),
                values: columns.iter().map(|c| record.fields.get(c).cloned().unwrap_or(Value::Null)).collect(),
            })
            .collect();
        let end = start + rows.len();
        let next = (end < self.records.len()).then(|| end.to_string());
        Ok(Page::from_rows(columns, &rows, next))
    }

    fn apply(&mut self, batch: OperationBatch) -> Result<Vec<Result<(), Error>>, Error> {
        let mut outcomes = Vec::with_capacity(batch.operations.len());
        for operation in batch.operations {
            let key = operation.action.key().to_string();
            // A redelivered operation (a batch read again after a crash)
            // takes effect once.
            if self.records.get(&key).is_some_and(|r| r.last_operation == operation.idempotency_key) {
                outcomes.push(Ok(()));
                continue;
            }
            let set = |record: &mut Record, row: &Row, only: Option<&[String]>| {
                for (name, value) in batch.columns.iter().zip(&row.values) {
                    if only.is_none_or(|only| only.contains(name)) {
                        record.fields.insert(name.clone(), value.clone());
                    }
                }
                record.last_operation = operation.idempotency_key.clone();
            };
            outcomes.push(match &operation.action {
                Action::Create(row) | Action::Upsert(row) => {
                    set(self.records.entry(key).or_default(), row, None);
                    Ok(())
                }
                Action::Update(update) => match self.records.get_mut(&key) {
                    Some(record) => {
                        set(record, &update.row, Some(&update.changed));
                        Ok(())
                    }
                    None => Err(Error::Rejected(format!("no record `{key}` to update"))),
                },
                Action::Delete(_) => {
                    self.records.remove(&key);
                    Ok(())
                }
            });
        }
        Ok(outcomes)
    }
}

sdk::export_destination!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::{Destination, Operation, RowUpdate};

    fn batch(action: Action, id: &str) -> OperationBatch {
        OperationBatch {
            columns: vec!["name".into()],
            operations: vec![Operation { idempotency_key: id.into(), action }],
        }
    }

    #[test]
    fn an_update_of_a_missing_record_is_rejected_and_a_create_applies() {
        let mut plugin = Plugin { config: Config { page_size: 10 }, records: BTreeMap::new() };
        let row = Row { key: "1".into(), values: vec![Value::Text("ada".into())] };
        let update = RowUpdate { row: row.clone(), changed: vec!["name".into()] };
        assert!(matches!(plugin.apply(batch(Action::Update(update), "a")).unwrap()[0], Err(Error::Rejected(_))));
        assert!(plugin.apply(batch(Action::Create(row), "b")).unwrap()[0].is_ok());
        assert_eq!(plugin.snapshot(None).unwrap().rows.len(), 1);
    }
}
