//! A source that turns the JSON messages of a NATS JetStream stream into
//! events. The host owns the connection, the durable consumer and the
//! acknowledgements (the `jetstream` host interface); this plugin only
//! decodes: each message is a JSON object holding a record's full state,
//! keyed by one or more of its fields, and the cursor is the stream sequence
//! of the last message consumed.
//!
//! Config (the tenant grants the stream with `streams = ["NAME"]`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `stream` | required | the stream's name in the tenant file |
//! | `key` | required | the field holding the key, or a list of them (the key is then the JSON array of their values) |
//! | `columns` | every field seen | the fields to sync, in order; by default every field of the batch's messages, in the order first seen |
//! | `delete_field` | none | a boolean field: a message where it is true deletes the record |
//! | `on_invalid` | `"fail"` | a message that is not a JSON object with the key: `"fail"` pauses the pipeline naming its sequence and subject; `"skip"` logs it and goes on |
//!
//! A stream has no snapshot: use this source in event pipelines.

use serde::Deserialize;
use synchost_plugin_sdk::jetstream::{self, Message};
use synchost_plugin_sdk::{self as sdk, Change, Error, Event, EventBatch, Page, PluginInfo, Row, Value};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The stream's name in the tenant file's `[streams]`; the plugin must be
    /// granted it with `streams = ["NAME"]`.
    stream: String,
    /// The message field that holds the key, or a list of them (with several,
    /// the key is the JSON array of their values).
    key: KeyFields,
    /// The fields to sync, in order. Default: every field of the batch's
    /// messages, in the order first seen (without `delete_field`).
    columns: Option<Vec<String>>,
    /// A boolean field: a message where it is true deletes the record.
    delete_field: Option<String>,
    /// What to do with a message that is not a JSON object with the key.
    #[serde(default)]
    on_invalid: OnInvalid,
}

/// The field, or fields, whose values make a message's key.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum KeyFields {
    /// One field; the key is its value as text.
    One(String),
    /// A list of fields; with more than one, the key is the JSON array of
    /// their values.
    Several(Vec<String>),
}

/// What to do with a message that cannot be read.
#[derive(Deserialize, Default, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
enum OnInvalid {
    /// Pause the pipeline, naming the message's sequence and subject.
    #[default]
    Fail,
    /// Log the message and go on with the next one.
    Skip,
}

impl Config {
    fn key_fields(&self) -> Vec<&str> {
        match &self.key {
            KeyFields::One(name) => vec![name.as_str()],
            KeyFields::Several(names) => names.iter().map(String::as_str).collect(),
        }
    }
}

/// A message decoded: its key, whether it deletes, and its fields.
struct Decoded {
    key: String,
    delete: bool,
    fields: serde_json::Map<String, serde_json::Value>,
}

fn decode(config: &Config, message: &Message) -> Result<Decoded, String> {
    let fields = match serde_json::from_slice::<serde_json::Value>(&message.payload) {
        Ok(serde_json::Value::Object(fields)) => fields,
        Ok(_) => return Err("the payload is not a JSON object".into()),
        Err(e) => return Err(format!("the payload is not JSON: {e}")),
    };
    let mut parts = Vec::new();
    for field in config.key_fields() {
        match fields.get(field) {
            None | Some(serde_json::Value::Null) => return Err(format!("it has no key field `{field}`")),
            Some(value) => parts.push(value.clone()),
        }
    }
    let key = match parts.as_slice() {
        [one] => sdk::value_to_text(&sdk::value_from_json(one.clone())),
        several => serde_json::Value::Array(several.to_vec()).to_string(),
    };
    let delete =
        config.delete_field.as_ref().is_some_and(|field| fields.get(field) == Some(&serde_json::Value::Bool(true)));
    Ok(Decoded { key, delete, fields })
}

/// The source of one plugin instance: its config, read once.
struct JetStreamSource {
    config: Config,
}

impl sdk::Plugin for JetStreamSource {
    type Config = Config;

    fn info() -> PluginInfo {
        sdk::plugin_info(
            "jetstream-source",
            env!("CARGO_PKG_VERSION"),
            "Turns the JSON messages of a NATS JetStream stream into events (the host owns the consumer and the acks)",
        )
    }

    fn new(config: Config) -> Result<Self, Error> {
        Ok(JetStreamSource { config })
    }
}

impl sdk::Source for JetStreamSource {
    // Not the SDK's default answer: this one tells the operator where the
    // source belongs.
    fn snapshot(&mut self, _token: Option<String>) -> Result<Page, Error> {
        Err(Error::Config(
            "plugin `jetstream-source` does not support `snapshot`: a JetStream stream has no snapshot; use it in \
             event pipelines"
                .into(),
        ))
    }

    fn events(&mut self, cursor: Option<String>, max: u32) -> Result<EventBatch, Error> {
        let config = &self.config;
        let after = match cursor.as_deref() {
            None => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                Error::Config(format!("cursor `{text}` is not a stream sequence; was the pipeline's source changed?"))
            })?),
        };
        let messages = jetstream::fetch(&config.stream, after, max)?;
        // The cursor is the last message consumed, whether or not it became
        // an event: the host acknowledges up to it once the batch commits.
        let cursor = messages.last().map(|m| m.sequence).or(after).unwrap_or(0).to_string();

        let mut decoded = Vec::with_capacity(messages.len());
        for message in &messages {
            match decode(config, message) {
                Ok(d) => decoded.push((message.sequence, d)),
                Err(why) if config.on_invalid == OnInvalid::Skip => sdk::log::warn(&format!(
                    "skipping message {} (subject `{}`): {why}",
                    message.sequence, message.subject
                )),
                Err(why) => {
                    return Err(Error::Config(format!(
                        "message {} of stream `{}` (subject `{}`) cannot be read: {why}; set on_invalid = \"skip\" to \
                         pass over such messages",
                        message.sequence, config.stream, message.subject
                    )));
                }
            }
        }
        let columns: Vec<String> = match &config.columns {
            Some(columns) => columns.clone(),
            None => {
                let mut seen: Vec<String> = Vec::new();
                for (_, d) in &decoded {
                    for name in d.fields.keys() {
                        // The delete flag says what to do, it is not synced.
                        if !seen.contains(name) && config.delete_field.as_ref() != Some(name) {
                            seen.push(name.clone());
                        }
                    }
                }
                seen
            }
        };
        let events = decoded
            .into_iter()
            .map(|(sequence, d)| {
                let change = if d.delete {
                    Change::Delete(d.key)
                } else {
                    let values = columns
                        .iter()
                        .map(|c| d.fields.get(c).cloned().map_or(Value::Null, sdk::value_from_json))
                        .collect();
                    Change::Upsert(Row { key: d.key, values })
                };
                Event { position: sequence.to_string(), change }
            })
            .collect();
        Ok(EventBatch { columns, events, cursor })
    }
}

sdk::export_source!(JetStreamSource);
