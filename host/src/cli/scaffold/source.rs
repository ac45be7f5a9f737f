//! {{name}}: a synchost source. This example makes up its data: `count`
//! people, as a snapshot (for diff syncs) paged `page_size` rows at a time,
//! and as a change stream (for event syncs) with one upsert per person, the
//! cursor being how many were read. Replace `person` and the paging with
//! reads of your system: files in a granted directory, HTTP through
//! `synchost_plugin_sdk::http`, SQL through `synchost_plugin_sdk::sql`.

use synchost_plugin_sdk::{self as sdk, Change, Error, Event, EventBatch, Page, PluginInfo, Row, Value};

/// The plugin's `config` table in a tenant file.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How many people there are.
    pub count: u32,
    /// Rows per snapshot page.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

fn default_page_size() -> u32 {
    100
}

/// The plugin, made once per run from its config.
pub struct Plugin {
    config: Config,
}

/// The columns of every row.
fn columns() -> Vec<String> {
    vec!["id".into(), "name".into()]
}

/// Person `i`.
fn person(i: u32) -> Row {
    Row { key: i.to_string(), values: vec![Value::Integer(i.into()), Value::Text(format!("person {i}"))] }
}

/// A page token or cursor: how many people come before it.
fn offset(token: Option<String>, what: &str) -> Result<u32, Error> {
    match token {
        None => Ok(0),
        Some(token) => token.parse().map_err(|_| Error::Config(format!("{what} `{token}` is not one this plugin made"))),
    }
}

impl sdk::Plugin for Plugin {
    type Config = Config;

    fn info() -> PluginInfo {
        sdk::plugin_info("{{name}}", env!("CARGO_PKG_VERSION"), "Makes up people, as a snapshot and as events")
    }

    fn new(config: Config) -> Result<Self, Error> {
        if config.page_size == 0 {
            return Err(Error::Config("`page_size` must be more than zero".into()));
        }
        Ok(Plugin { config })
    }
}

impl sdk::Source for Plugin {
    fn snapshot(&mut self, token: Option<String>) -> Result<Page, Error> {
        let start = offset(token, "page token")?;
        let end = (start + self.config.page_size).min(self.config.count);
        let rows: Vec<Row> = (start..end).map(person).collect();
        let next = (end < self.config.count).then(|| end.to_string());
        Ok(Page::from_rows(columns(), &rows, next))
    }

    fn events(&mut self, cursor: Option<String>, max: u32) -> Result<EventBatch, Error> {
        let start = offset(cursor, "cursor")?;
        let end = (start + max).min(self.config.count);
        let events = (start..end).map(|i| Event { position: i.to_string(), change: Change::Upsert(person(i)) }).collect();
        Ok(EventBatch { columns: columns(), events, cursor: end.to_string() })
    }
}

sdk::export_source!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::Source;

    #[test]
    fn pages_end_and_events_resume_after_their_cursor() {
        let mut plugin = Plugin { config: Config { count: 5, page_size: 2 } };
        let first = plugin.snapshot(None).unwrap();
        assert_eq!((first.rows.len(), first.next.as_deref()), (2, Some("2")));
        assert_eq!(plugin.snapshot(Some("4".into())).unwrap().next, None);
        let batch = plugin.events(Some("3".into()), 10).unwrap();
        assert_eq!((batch.events.len(), batch.cursor.as_str()), (2, "5"));
    }
}
