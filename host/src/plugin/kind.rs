//! What kind of plugin a component is, and whether its WIT version fits this host.

use std::fmt;

/// The WIT package plugins are built against.
pub const WIT_PACKAGE: &str = "synchost:plugin";
/// The version of that package this host implements.
pub const WIT_VERSION: &str = "0.1.0";

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

    /// Recognises an export name such as `synchost:plugin/source@0.1.0`,
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

/// Whether a plugin built against `version` can run on this host: the same
/// major version, and below 1.0 the same minor version too (semver's rule for
/// 0.x); a newer minor than the host's would expect functions it lacks.
pub fn is_compatible(version: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split(['.', '-', '+']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    match (parse(version), parse(WIT_VERSION)) {
        (Some((major, minor)), Some((host_major, host_minor))) => {
            major == host_major && if major == 0 { minor == host_minor } else { minor <= host_minor }
        }
        _ => false,
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
        assert!(is_compatible("0.1.0"));
        assert!(is_compatible("0.1.7"));
        assert!(!is_compatible("0.2.0"));
        assert!(!is_compatible("1.1.0"));
        assert!(!is_compatible("nonsense"));
    }
}
