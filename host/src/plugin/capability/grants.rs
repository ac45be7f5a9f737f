//! The one check of a named grant: a plugin names a connection or a stream,
//! and gets it only if its tenant granted it that name; a refusal names what
//! was asked, who asked, and what it was granted instead.

use std::sync::Arc;

use crate::plugin::types::Error as WitError;

/// What one tenant granted one plugin of one kind of named resource.
pub(in crate::plugin) struct Grants<T> {
    pub tenant: String,
    pub plugin: String,
    /// What a name names, for messages: `connection`, `stream`.
    what: &'static str,
    /// The plugin key that grants them: `connections`, `streams`.
    key: &'static str,
    granted: Vec<Arc<T>>,
    name_of: fn(&T) -> &str,
}

impl<T> Grants<T> {
    pub(in crate::plugin) fn new(
        tenant: &str,
        plugin: &str,
        (what, key): (&'static str, &'static str),
        granted: &[Arc<T>],
        name_of: fn(&T) -> &str,
    ) -> Grants<T> {
        Grants { tenant: tenant.to_string(), plugin: plugin.to_string(), what, key, granted: granted.to_vec(), name_of }
    }

    /// The granted resource `name`, or the config error that refuses it.
    pub(in crate::plugin) fn get(&self, name: &str) -> Result<Arc<T>, WitError> {
        if let Some(found) = self.granted.iter().find(|g| (self.name_of)(g) == name) {
            return Ok(found.clone());
        }
        let names: Vec<&str> = self.granted.iter().map(|g| (self.name_of)(g)).collect();
        Err(WitError::Config(format!(
            "{} `{name}` is not granted to plugin `{}` of tenant `{}` (its `{}` grant: {})",
            self.what,
            self.plugin,
            self.tenant,
            self.key,
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )))
    }
}
