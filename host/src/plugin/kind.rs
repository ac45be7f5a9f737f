//! What kind of plugin a component is, and whether its WIT version fits this host.

use std::fmt;

/// The WIT package plugins are built against.
pub const WIT_PACKAGE: &str = "synchost:plugin";
/// The version of that package this host implements. 0.2.0 carries snapshot
/// pages and transforms as tables laid out by column; 0.2.1 adds the
/// `config` export (a plugin's config schema), which 0.2.0 plugins lack and
/// still load without; 0.2.2 adds `sql.connection.bulk-upsert` and
/// `sql.rows.next-table`, and 0.2.3 `host.run-fence` (the run's lease, for
/// destinations that fence out stale writers), which older plugins never
/// call; plugins built against 0.1.x still load, through
/// [`super::legacy`] (see [`is_compatible`]).
pub const WIT_VERSION: &str = "0.2.3";

/// The three plugin worlds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Source,
    Destination,
    Transform,
}

impl PluginKind {
    /// The interface a plugin of this kind exports, e.g. `source`.
    pub fn interface(self) -> &'static str {
        match self {
            PluginKind::Source => "source",
            PluginKind::Destination => "destination",
            PluginKind::Transform => "transform",
        }
    }

    /// The world a plugin of this kind targets, e.g. `source-plugin`.
    pub fn world(self) -> String {
        format!("{WIT_PACKAGE}/{}-plugin", self.interface())
    }

    /// Recognises an export name such as `synchost:plugin/source@0.1.1`,
    /// returning the kind and the version.
    pub fn from_export(name: &str) -> Option<(PluginKind, &str)> {
        let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
        let (interface, version) = rest.split_once('@')?;
        let kind = match interface {
            "source" => PluginKind::Source,
            "destination" => PluginKind::Destination,
            "transform" => PluginKind::Transform,
            _ => return None,
        };
        Some((kind, version))
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.interface())
    }
}

/// Whether a plugin built against `version` can run on this host: on the
/// track of [`WIT_VERSION`], or on the 0.1 track the host still serves
/// through [`super::legacy`].
pub fn is_compatible(version: &str) -> bool {
    fits(version, WIT_VERSION) || is_legacy(version)
}

/// Whether a plugin built against `version` needs the 0.1.x bindings.
pub fn is_legacy(version: &str) -> bool {
    fits(version, super::legacy::LEGACY_WIT_VERSION)
}

/// Whether `version` is on the track of `host` and no newer.
///
/// Versions are compatible along the track wasmtime itself links across (its
/// semver matching of import and export names): the same major version, and
/// below 1.0 the same minor version too, since in 0.x the minor is the
/// breaking number and the patch the additive one (0.1.0 → 0.1.1 added the
/// `sql` interface). On that track a plugin may be older than the host, never
/// newer: it could need functions this host lacks. Pre-releases match only
/// exactly, as wasmtime matches them.
fn fits(version: &str, host: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64, u64, bool)> {
        let (core, pre) = match v.split_once(['-', '+']) {
            Some((core, rest)) => (core, v[core.len()..].starts_with('-') && !rest.is_empty()),
            None => (v, false),
        };
        let mut parts = core.split('.');
        let parsed = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, pre);
        parts.next().is_none().then_some(parsed)
    };
    let (Some(plugin), Some(host_parts)) = (parse(version), parse(host)) else { return false };
    if plugin.3 || host_parts.3 {
        return version == host;
    }
    let (major, minor, patch, _) = plugin;
    let (host_major, host_minor, host_patch, _) = host_parts;
    match (major, host_major) {
        (0, 0) => minor == host_minor && patch <= host_patch,
        _ => major == host_major && (minor, patch) <= (host_minor, host_patch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_plugin_exports() {
        assert_eq!(PluginKind::from_export("synchost:plugin/source@0.1.0"), Some((PluginKind::Source, "0.1.0")));
        assert_eq!(PluginKind::from_export("synchost:plugin/transform@0.2.1"), Some((PluginKind::Transform, "0.2.1")));
        assert_eq!(PluginKind::from_export("wasi:cli/run@0.2.0"), None);
        assert_eq!(PluginKind::from_export("synchost:plugin/types@0.1.0"), None);
    }

    #[test]
    fn compatibility_follows_semver_for_zero_versions() {
        // This host's own version, and the 0.1 track it still serves.
        assert!(is_compatible("0.2.0"));
        assert!(is_compatible("0.2.1"));
        assert!(is_compatible("0.1.0"));
        assert!(is_compatible("0.1.1"));
        assert!(is_legacy("0.1.0") && is_legacy("0.1.1") && !is_legacy("0.2.0"));
        // Newer on a track: may need functions this host lacks.
        assert!(!is_compatible("0.1.7"));
        assert!(is_compatible("0.2.2"));
        assert!(is_compatible("0.2.3"));
        assert!(!is_compatible("0.2.4"));
        // Another track.
        assert!(!is_compatible("0.3.0"));
        assert!(!is_compatible("0.0.1"));
        assert!(!is_compatible("1.1.0"));
        assert!(!is_compatible("0.2.0-rc.1"));
        assert!(!is_compatible("0.2"));
        assert!(!is_compatible("nonsense"));
    }
}
