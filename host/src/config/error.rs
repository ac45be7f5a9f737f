//! Config errors that name the file, line and key they come from.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is with the file as a whole.
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The file as a whole (it is missing, say).
    pub fn file(file: &Path) -> Location {
        Location { file: file.to_path_buf(), line: 0, column: 0 }
    }

    /// The place of byte `offset` in `text`, the content of `file`.
    pub fn at(file: &Path, text: &str, offset: usize) -> Location {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        Location { file: file.to_path_buf(), line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

/// One problem in the configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{location}: {}{message}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ConfigError {
    pub location: Location,
    /// The dotted key the problem is with, e.g. `pipelines.roster.schedule`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(location: Location, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { location, key: key.into(), message: message.into() }
    }
}

/// All the problems found in one pass.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    pub fn extend(&mut self, other: ConfigErrors) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Puts the problems in the order an operator reads the files: the
    /// checks that need the plugins run after those that do not, and find
    /// problems anywhere in a file.
    pub fn sort_by_place(&mut self) {
        self.0.sort_by(|a, b| {
            let (a, b) = (&a.location, &b.location);
            (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column))
        });
    }

    /// `Ok(value)` when nothing was found wrong.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() { Ok(value) } else { Err(self) }
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses a TOML file into `T`, turning a syntax or shape error into a
/// [`ConfigError`] at the place toml points to.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let location = Location::at(file, text, span.start);
        // toml points at the offending key or value; show the whole line's key.
        let key = key_at(text, span.start);
        ConfigError::new(location, key, e.message().trim().to_string())
    })
}

/// The key on the line that holds byte `offset`, prefixed with the table the
/// line belongs to: good enough to name what a parse error is about.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return line.trim_matches(|c| c == '[' || c == ']').trim().to_string();
    }
    let key = line.split('=').next().unwrap_or("").trim().trim_matches('"').to_string();
    match table {
        Some(table) if !key.is_empty() => format!("{table}.{key}"),
        Some(table) => table,
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_columns_from_one() {
        let text = "a = 1\nbb = 2\n";
        let at = Location::at(Path::new("t.toml"), text, text.find("2").unwrap());
        assert_eq!((at.line, at.column), (2, 6));
        assert_eq!(at.to_string(), "t.toml:2:6");
    }

    #[test]
    fn key_at_names_the_table_and_key() {
        let text = "[plugins.roster]\npath = \"x\"\nbogus = 1\n";
        assert_eq!(key_at(text, text.find("bogus").unwrap()), "plugins.roster.bogus");
        assert_eq!(key_at(text, 3), "plugins.roster");
    }
}
