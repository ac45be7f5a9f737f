//! A plugin's `config` table checked against the JSON Schema its plugin
//! declares (WIT 0.2.1's `config` export), each violation reported at the
//! tenant file's line and key, like every other config error.
//!
//! The table reaches the schema as the plugin reads it (`host.config()`: the
//! TOML table as a JSON object), so a schema violation is exactly what the
//! plugin would refuse; and each place in that JSON is mapped back to where
//! the tenant file wrote it ([`ConfigSpots`]).

use std::collections::BTreeMap;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, ConfigErrors, Lines, Location};
use super::tenant_file::PluginConfig;

/// Where each value of one plugin's `config` table stands in its tenant
/// file, by JSON pointer (`/fields/1/form`): the place and the dotted key
/// (`plugins.map.config.fields[1].form`) an error about it names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigSpots {
    spots: BTreeMap<String, Spot>,
}

#[derive(Debug, Clone, PartialEq)]
struct Spot {
    location: Location,
    key: String,
}

impl ConfigSpots {
    /// Indexes the `config` table of every plugin of a tenant file (parsed
    /// as `document`, with `lines` its line index), by plugin name. A plugin
    /// that writes no `config` table is missing: see
    /// [`ConfigSpots::unwritten`].
    pub(crate) fn index_tenant(lines: &Lines<'_>, document: &Spanned<DeTable<'_>>) -> BTreeMap<String, ConfigSpots> {
        let mut index = BTreeMap::new();
        let Some(plugins) = entry(document.get_ref(), "plugins").and_then(|(_, plugins)| as_table(plugins)) else {
            return index;
        };
        let at = |offset: usize| lines.at(offset);
        for (plugin, table) in plugins {
            let Some((key_at, config)) = as_table(table).and_then(|table| entry(table, "config")) else { continue };
            let key = format!("plugins.{}.config", toml_key(plugin.get_ref()));
            let mut spots = ConfigSpots::default();
            spots.spots.insert(String::new(), Spot { location: at(key_at), key: key.clone() });
            spots.walk(config, String::new(), key, &at);
            index.insert(plugin.get_ref().to_string(), spots);
        }
        index
    }

    /// The spots of a plugin that writes no `config` table: everything is
    /// reported at `plugin_at`, where its own table is.
    pub(crate) fn unwritten(plugin: &str, plugin_at: Location) -> ConfigSpots {
        let key = format!("plugins.{}.config", toml_key(plugin));
        ConfigSpots { spots: BTreeMap::from([(String::new(), Spot { location: plugin_at, key })]) }
    }

    fn walk(&mut self, value: &Spanned<DeValue<'_>>, pointer: String, key: String, at: &dyn Fn(usize) -> Location) {
        match value.get_ref() {
            DeValue::Table(table) => {
                for (name, value) in table {
                    let pointer = format!("{pointer}/{}", escape_pointer(name.get_ref()));
                    let key = format!("{key}.{}", toml_key(name.get_ref()));
                    self.spots.insert(pointer.clone(), Spot { location: at(name.span().start), key: key.clone() });
                    self.walk(value, pointer, key, at);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let pointer = format!("{pointer}/{i}");
                    let key = format!("{key}[{i}]");
                    self.spots.insert(pointer.clone(), Spot { location: at(item.span().start), key: key.clone() });
                    self.walk(item, pointer, key, at);
                }
            }
            _ => {}
        }
    }

    /// The spot of `pointer`, or of its nearest enclosing value the file
    /// writes (a key the plugin requires is missing from its table, say).
    fn spot(&self, pointer: &str) -> &Spot {
        let mut pointer = pointer;
        loop {
            if let Some(spot) = self.spots.get(pointer) {
                return spot;
            }
            match pointer.rfind('/') {
                Some(at) => pointer = &pointer[..at],
                None => return &self.spots[""],
            }
        }
    }
}

fn entry<'a, 'i>(table: &'a DeTable<'i>, name: &str) -> Option<(usize, &'a Spanned<DeValue<'i>>)> {
    table.iter().find(|(key, _)| key.get_ref() == name).map(|(key, value)| (key.span().start, value))
}

fn as_table<'a, 'i>(value: &'a Spanned<DeValue<'i>>) -> Option<&'a DeTable<'i>> {
    match value.get_ref() {
        DeValue::Table(table) => Some(table),
        _ => None,
    }
}

/// A key as TOML writes it in a dotted path: bare where it can be, quoted
/// where it must.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { key.to_string() } else { format!("{key:?}") }
}

/// One segment of a JSON pointer (RFC 6901).
fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Checks `plugin`'s config table against `schema`, the JSON Schema text its
/// plugin declared. A schema that is not one is the plugin's fault, and is
/// reported as such, at the plugin's `path`.
pub fn check(plugin: &PluginConfig, schema: &str) -> Result<(), ConfigErrors> {
    let plugin_error = |message: String| {
        ConfigErrors::from(ConfigError::new(plugin.location.clone(), format!("plugins.{}.path", plugin.name), message))
    };
    let schema: serde_json::Value = serde_json::from_str(schema).map_err(|e| {
        plugin_error(format!("plugin `{}` declares a config schema that is not JSON: {e}", plugin.name))
    })?;
    let validator = jsonschema::options().with_draft(jsonschema::Draft::Draft202012).build(&schema).map_err(|e| {
        plugin_error(format!("plugin `{}` declares a config schema that is not a valid JSON Schema: {e}", plugin.name))
    })?;
    let mut errors = ConfigErrors::default();
    for error in validator.iter_errors(&plugin.config) {
        let (pointer, message) = describe(&error, &schema);
        let spot = plugin.config_spots.spot(&pointer);
        errors.push(ConfigError::new(spot.location.clone(), spot.key.clone(), message));
    }
    errors.into_result(())
}

/// Where a violation is (a JSON pointer into the config) and what to tell
/// the operator. An unknown key is placed at the key itself, not the table
/// that holds it; a value that fits none of a key's forms (an enum, say)
/// lists them; the rest keep the validator's wording, which names the value
/// and what the schema wanted.
fn describe(error: &jsonschema::ValidationError<'_>, schema: &serde_json::Value) -> (String, String) {
    use jsonschema::error::ValidationErrorKind as Kind;
    let pointer = error.instance_path().as_str().to_string();
    match error.kind() {
        Kind::AdditionalProperties { unexpected } if unexpected.len() == 1 => (
            format!("{pointer}/{}", escape_pointer(&unexpected[0])),
            format!("unknown key `{}`: the plugin does not take it", unexpected[0]),
        ),
        Kind::AdditionalProperties { unexpected } => (
            pointer,
            format!(
                "unknown keys {}: the plugin does not take them",
                unexpected.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            ),
        ),
        Kind::Required { property } => {
            let name = property.as_str().map_or_else(|| property.to_string(), str::to_string);
            (pointer, format!("missing key `{name}`, which the plugin requires"))
        }
        Kind::AnyOf { .. } | Kind::OneOfNotValid { .. } => {
            // The schema path ends at the `anyOf`/`oneOf` array, in the
            // plugin's own schema document.
            let kind = if matches!(error.kind(), Kind::AnyOf { .. }) { "anyOf" } else { "oneOf" };
            match schema.pointer(error.schema_path().as_str()) {
                Some(forms) => {
                    let expected = shape(&serde_json::json!({ kind: forms }), schema);
                    (pointer, format!("{} is not allowed here: expected {expected}", error.instance()))
                }
                None => (pointer, error.to_string()),
            }
        }
        _ => (pointer, error.to_string()),
    }
}

/// A short name for the values a schema allows: its choices where it has
/// some (`"csv"|"jsonl"`), else its JSON type (`string or array of
/// string`); `root` resolves its `$ref`s. Null is left out: for a config
/// key it means what leaving the key out means.
pub fn shape(schema: &serde_json::Value, root: &serde_json::Value) -> String {
    shape_within(schema, root, 0)
}

fn shape_within(schema: &serde_json::Value, root: &serde_json::Value, depth: usize) -> String {
    use serde_json::Value;
    // A plugin's schema may refer to itself without end.
    if depth > 8 {
        return "…".into();
    }
    let inner = |schema: &Value| shape_within(schema, root, depth + 1);
    if let Some(value) = schema.get("const") {
        return value.to_string();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().filter(|v| !v.is_null()).map(ToString::to_string).collect::<Vec<_>>().join("|");
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(name)) => vec![name.as_str()],
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).filter(|n| *n != "null").collect(),
        _ => vec![],
    };
    match (types.as_slice(), schema.get("items")) {
        (["array"], Some(items)) => return format!("array of {}", inner(items)),
        ([], _) => {}
        (names, _) => return names.join(" or "),
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return match reference.strip_prefix('#').and_then(|pointer| root.pointer(pointer)) {
            Some(target) => inner(target),
            None => reference.rsplit('/').next().unwrap_or(reference).to_string(),
        };
    }
    for combinator in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(combinator).and_then(Value::as_array) {
            let options: Vec<&Value> =
                options.iter().filter(|o| o.get("type").and_then(Value::as_str) != Some("null")).collect();
            let choices = options.iter().all(|o| o.get("const").is_some() || o.get("enum").is_some());
            let names: Vec<String> = options.into_iter().map(inner).collect();
            return names.join(if choices { "|" } else { " or " });
        }
    }
    "any value".to_string()
}
