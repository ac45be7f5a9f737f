//! A transform configured from the tenant file: it picks and renames fields,
//! computes fields from templates over several others (a username from first
//! name, last name and an id, say), and filters rows out.
//!
//! ```toml
//! [plugins.lms_fields.config]
//! fields = [
//!   { name = "sis_id", from = "student_id" },
//!   { name = "username", template = "{first_name|lower|first:1}{last_name|lower|alnum}{student_id}" },
//! ]
//! filter = { field = "status", not_equals = "withdrawn" }
//! ```

mod template;

use serde::Deserialize;
use synchost_plugin_sdk::{self as sdk, Error, PluginInfo, Row, RowBatch, Value};

use exports::synchost::plugin::transform::Transformed;
use template::Template;

wit_bindgen::generate!({
    path: "../../wit",
    world: "synchost:plugin/transform-plugin",
    with: {
        "synchost:plugin/types@0.1.1": synchost_plugin_sdk::types,
        "synchost:plugin/host@0.1.1": synchost_plugin_sdk::host,
        "synchost:plugin/sql@0.1.1": synchost_plugin_sdk::sql,
    },
});

/// The plugin's `config` table in the tenant file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The output fields, in order. Nothing else is passed on.
    fields: Vec<FieldConfig>,
    /// Keep only the rows that pass.
    filter: Option<Filter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldConfig {
    name: String,
    /// Copy this input field.
    from: Option<String>,
    /// Or compute the value from a template.
    template: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    field: String,
    equals: Option<String>,
    not_equals: Option<String>,
}

/// How one output field gets its value.
enum Rule {
    Copy(Option<usize>),
    Compute(Template),
}

struct FieldMapper;

impl exports::synchost::plugin::transform::Guest for FieldMapper {
    fn info() -> PluginInfo {
        sdk::plugin_info(
            "field-mapper",
            env!("CARGO_PKG_VERSION"),
            "Renames, computes and filters fields as the tenant file describes",
        )
    }

    fn transform(batch: RowBatch) -> Result<Transformed, Error> {
        let config: Config = sdk::config()?;
        let position = |name: &str| batch.columns.iter().position(|c| c == name);
        let mut rules = Vec::with_capacity(config.fields.len());
        for field in &config.fields {
            rules.push(match (&field.from, &field.template) {
                (Some(from), None) => Rule::Copy(position(from)),
                (None, Some(template)) => Rule::Compute(
                    Template::parse(template, &batch.columns)
                        .map_err(|e| Error::Config(format!("field `{}`: {e}", field.name)))?,
                ),
                _ => {
                    return Err(Error::Config(format!(
                        "field `{}` needs exactly one of `from` and `template`",
                        field.name
                    )));
                }
            });
        }
        let filter = config.filter.as_ref().map(|f| (position(&f.field), f));
        // How many output fields copy each input column.
        let mut copy_counts = vec![0usize; batch.columns.len()];
        for rule in &rules {
            if let Rule::Copy(Some(i)) = rule {
                copy_counts[*i] += 1;
            }
        }
        let mut copies = copy_counts.clone();

        let mut rows = Vec::with_capacity(batch.rows.len());
        let mut origins = Vec::with_capacity(batch.rows.len());
        for (index, row) in batch.rows.into_iter().enumerate() {
            if let Some((at, filter)) = &filter {
                let text = at.map(|i| sdk::value_to_text(&row.values[i])).unwrap_or_default();
                let keep = filter.equals.as_ref().is_none_or(|v| *v == text)
                    && filter.not_equals.as_ref().is_none_or(|v| *v != text);
                if !keep {
                    continue;
                }
            }
            // Computed fields first, while every input value is still in place;
            // then copies, each moving its value out unless another rule still
            // copies it too (cloning ten strings a row adds up at a million).
            let mut values: Vec<Value> = rules
                .iter()
                .map(|rule| match rule {
                    Rule::Compute(template) => Value::Text(template.render(&row.values)),
                    _ => Value::Null,
                })
                .collect();
            let mut input = row.values;
            for (out, rule) in values.iter_mut().zip(&rules).rev() {
                if let Rule::Copy(Some(i)) = rule {
                    *out = if copies[*i] > 1 {
                        copies[*i] -= 1;
                        input[*i].clone()
                    } else {
                        std::mem::replace(&mut input[*i], Value::Null)
                    };
                }
            }
            copies.copy_from_slice(&copy_counts);
            rows.push(Row { key: row.key, values });
            origins.push(index as u32);
        }
        let columns = config.fields.into_iter().map(|f| f.name).collect();
        Ok(Transformed { columns, rows, origins })
    }
}

export!(FieldMapper);
