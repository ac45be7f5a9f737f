//! A grants file for `synchost plugin run` and `plugin test`: the
//! `[connections.NAME]` and `[streams.NAME]` tables a tenant file would
//! declare, in the same form, every one of them granted to the plugin under
//! test. What cannot be said as a flag (a password from an environment
//! variable, a stream's durable consumer) is said as in a tenant file.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::connection::{ConnectionEntry, Site};
use super::error::{ConfigError, ConfigErrors, Lines, Location, parse_toml};
use super::stream::StreamEntry;
use super::{ConnectionConfig, StreamConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    #[serde(default)]
    connections: BTreeMap<Spanned<String>, ConnectionEntry>,
    #[serde(default)]
    streams: BTreeMap<Spanned<String>, StreamEntry>,
}

/// What a grants file grants: its connections and its streams.
pub type Grants = (Vec<Arc<ConnectionConfig>>, Vec<Arc<StreamConfig>>);

/// The connections and streams declared in `path`, each checked as a tenant
/// file's would be, every problem at its line.
pub fn load_grants(path: &Path) -> Result<Grants, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(Location::file(path), "", format!("cannot read the grants file: {e}")))?;
    let file: GrantsFile = parse_toml(path, &text)?;
    let lines = Lines::new(path, &text);
    let site = Site { lines: &lines };
    let (mut connections, mut streams, mut errors) = (Vec::new(), Vec::new(), ConfigErrors::default());
    for (name, entry) in file.connections {
        match entry.check(name.get_ref(), name.span().start, &site) {
            Ok(connection) => connections.push(Arc::new(connection)),
            Err(e) => errors.extend(e),
        }
    }
    for (name, entry) in file.streams {
        match entry.check("plugin-run", name.get_ref(), name.span().start, &site) {
            Ok(stream) => streams.push(Arc::new(stream)),
            Err(e) => errors.extend(e),
        }
    }
    errors.into_result((connections, streams))
}
