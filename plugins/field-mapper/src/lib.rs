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
//!
//! A field may name a `type` (`integer`, `float`, `boolean`, `text`, `date`):
//! its values are converted to it, so that a CSV's text `"9"` reaches an API
//! that keeps numbers as the number 9, and a diff compares like with like.
//! Empty text becomes null; a value that does not convert fails the batch,
//! naming the row, the field and the value.
//!
//! It works column by column: the filter picks the rows kept, a copied field
//! takes its input column whole (moved, not copied, when no row is dropped),
//! and a computed field renders into a new column.

mod convert;
mod template;

use serde::Deserialize;
use synchost_plugin_sdk::{self as sdk, Column, Error, PluginInfo, Table, Transformed, ValueRef};

use template::Template;

/// The plugin's `config` table in the tenant file.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The output fields, in order. Nothing else is passed on.
    fields: Vec<FieldConfig>,
    /// Keep only the rows that pass.
    filter: Option<Filter>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FieldConfig {
    /// The output field's name, unique among `fields`.
    name: String,
    /// Copy this input field.
    from: Option<String>,
    /// Or compute the value from a template.
    template: Option<String>,
    /// Convert the values to this type.
    #[serde(rename = "type")]
    to: Option<convert::FieldType>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Filter {
    /// The input field tested, by its value as text (empty when null or when
    /// the input has no such field).
    field: String,
    /// Keep only the rows where the field is this text.
    equals: Option<String>,
    /// Keep only the rows where the field is not this text.
    not_equals: Option<String>,
}

/// How one output field gets its value.
enum Rule {
    Copy(Option<usize>),
    Compute(Template),
}

/// The mapper of one plugin instance: its config, read and checked once.
struct FieldMapper {
    config: Config,
}

impl sdk::Plugin for FieldMapper {
    type Config = Config;

    fn info() -> PluginInfo {
        sdk::plugin_info(
            "field-mapper",
            env!("CARGO_PKG_VERSION"),
            "Renames, computes and filters fields as the tenant file describes",
        )
    }

    fn new(config: Config) -> Result<Self, Error> {
        for (i, field) in config.fields.iter().enumerate() {
            // Column names are unique in a table: the host refuses one that
            // repeats a name, and this says which field of the config did.
            if config.fields[..i].iter().any(|other| other.name == field.name) {
                return Err(Error::Config(format!("field `{}` is named twice in `fields`", field.name)));
            }
            if field.from.is_some() == field.template.is_some() {
                return Err(Error::Config(format!(
                    "field `{}` needs exactly one of `from` and `template`",
                    field.name
                )));
            }
        }
        Ok(FieldMapper { config })
    }
}

impl sdk::Transform for FieldMapper {
    fn transform(&mut self, input: Table) -> Result<Transformed, Error> {
        let config = &self.config;
        // Templates are bound to the input's columns, which each batch names.
        let mut rules = Vec::with_capacity(config.fields.len());
        for field in &config.fields {
            rules.push(match (&field.from, &field.template) {
                (Some(from), _) => Rule::Copy(input.position(from)),
                (None, Some(template)) => Rule::Compute(
                    Template::parse(template, &input.columns)
                        .map_err(|e| Error::Config(format!("field `{}`: {e}", field.name)))?,
                ),
                (None, None) => unreachable!("checked when the mapper was made"),
            });
        }
        let kept = match &config.filter {
            Some(filter) => filter.kept_rows(&input),
            None => (0..input.len() as u32).collect(),
        };
        let all_kept = kept.len() == input.len();
        let values = output_columns(&rules, input.values, &kept, all_kept);

        // The output rows' keys are their input rows' keys: a table of the
        // keys alone, selected like the columns, then given the columns.
        let keys =
            Table { columns: Vec::new(), key_data: input.key_data, key_ends: input.key_ends, values: Vec::new() };
        let keys = if all_kept { keys } else { keys.select(&kept) };
        let types: Vec<Option<convert::FieldType>> = config.fields.iter().map(|f| f.to).collect();
        let mut rows = Table { columns: config.fields.iter().map(|f| f.name.clone()).collect(), values, ..keys };
        convert::columns(&mut rows, &types)?;
        Ok(Transformed { rows, origins: kept })
    }
}

/// The output columns, one per rule, for the rows `kept` (all of the input's
/// when `all_kept`).
fn output_columns(rules: &[Rule], mut inputs: Vec<Column>, kept: &[u32], all_kept: bool) -> Vec<Column> {
    // Computed fields first, while every input column is still in place.
    let mut columns: Vec<Option<Column>> = rules
        .iter()
        .map(|rule| match rule {
            Rule::Compute(template) => Some(template.render_column(&inputs, kept)),
            Rule::Copy(_) => None,
        })
        .collect();
    // Then copies. With every row kept, each moves its input column out
    // unless another rule still copies it too (copying a million values adds
    // up); otherwise each takes the kept rows' values.
    let mut copies_left = vec![0usize; inputs.len()];
    for rule in rules {
        if let Rule::Copy(Some(i)) = rule {
            copies_left[*i] += 1;
        }
    }
    for (column, rule) in columns.iter_mut().zip(rules) {
        if let Rule::Copy(from) = rule {
            *column = Some(match *from {
                None => Column::repeat(ValueRef::Null, kept.len()),
                Some(i) if !all_kept => inputs[i].select(kept),
                Some(i) => {
                    copies_left[i] -= 1;
                    if copies_left[i] > 0 {
                        inputs[i].clone()
                    } else {
                        // Leaves an empty column behind, never read again.
                        std::mem::replace(&mut inputs[i], Column::repeat(ValueRef::Null, 0))
                    }
                }
            });
        }
    }
    columns.into_iter().map(|column| column.expect("every rule made its column")).collect()
}

impl Filter {
    /// The indices of the rows that pass, in order. A row passes on the text
    /// of its `field` (empty where the input has no such column).
    fn kept_rows(&self, input: &Table) -> Vec<u32> {
        let column = input.position(&self.field).map(|i| &input.values[i]);
        let passes = |text: &str| {
            self.equals.as_deref().is_none_or(|v| v == text) && self.not_equals.as_deref().is_none_or(|v| v != text)
        };
        (0..input.len())
            .filter(|&row| passes(&column.map(|c| c.get(row).to_text()).unwrap_or_default()))
            .map(|row| row as u32)
            .collect()
    }
}

sdk::export_transform!(FieldMapper);
