//! {{name}}: a synchost transform. It upper-cases the text of the columns
//! its config names and leaves the rest as they are; a row whose column holds
//! something other than text is rejected, naming it. Replace the mapping in
//! `transform` with yours.

use synchost_plugin_sdk::{self as sdk, ColumnBuilder, Error, PluginInfo, Table, Transformed, ValueRef};

/// The plugin's `config` table in a tenant file. Its JSON Schema, derived
/// here, is what the host checks tenant files against.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The columns to upper-case.
    pub columns: Vec<String>,
}

/// The plugin, made once per run from its config.
pub struct Plugin {
    config: Config,
}

impl sdk::Plugin for Plugin {
    type Config = Config;

    fn info() -> PluginInfo {
        sdk::plugin_info("{{name}}", env!("CARGO_PKG_VERSION"), "Upper-cases the columns its config names")
    }

    fn new(config: Config) -> Result<Self, Error> {
        Ok(Plugin { config })
    }
}

impl sdk::Transform for Plugin {
    fn transform(&mut self, mut input: Table) -> Result<Transformed, Error> {
        for name in &self.config.columns {
            let Some(at) = input.position(name) else { continue };
            let mut upper = ColumnBuilder::with_capacity(input.len());
            for row in 0..input.len() {
                match input.values[at].get(row) {
                    ValueRef::Text(text) => upper.push_text(&text.to_uppercase()),
                    ValueRef::Null => upper.push_null(),
                    other => {
                        return Err(Error::Rejected(format!(
                            "row `{}`: column `{name}` holds `{other}`, not text",
                            input.key(row)
                        )));
                    }
                }
            }
            input.values[at] = upper.finish();
        }
        // One output row per input row, in order.
        let origins = (0..input.len() as u32).collect();
        Ok(Transformed { rows: input, origins })
    }
}

sdk::export_transform!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::{Row, Transform, Value};

    #[test]
    fn upper_cases_the_configured_column_only() {
        let mut plugin = Plugin { config: Config { columns: vec!["name".into()] } };
        let columns = vec!["name".to_string(), "city".to_string()];
        let rows = [Row { key: "1".into(), values: vec![Value::Text("ada".into()), Value::Text("london".into())] }];
        let out = plugin.transform(Table::from_rows(columns, &rows)).unwrap();
        assert_eq!(out.rows.to_rows()[0].values, [Value::Text("ADA".into()), Value::Text("london".into())]);
        assert_eq!(out.origins, [0]);
    }
}
