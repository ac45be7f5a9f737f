//! Config errors that name the file, line and key they come from.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::DeTable;

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

/// Where each line of a file's text starts, so that the place of any byte
/// offset is found by a binary search: a tenant file keeps the place of every
/// plugin, reference and config value it declares, and counting lines from
/// the top for each would make loading a large file quadratic.
pub(crate) struct Lines<'a> {
    file: &'a Path,
    starts: Vec<usize>,
    len: usize,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(file: &'a Path, text: &str) -> Lines<'a> {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Lines { file, starts, len: text.len() }
    }

    /// The place of byte `offset`, as [`Location::at`] finds it.
    pub(crate) fn at(&self, offset: usize) -> Location {
        let offset = offset.min(self.len);
        // The last line that starts at or before the offset.
        let line = self.starts.partition_point(|&start| start <= offset);
        let column = offset - self.starts[line - 1] + 1;
        Location { file: self.file.to_path_buf(), line, column }
    }

    pub(crate) fn file(&self) -> &'a Path {
        self.file
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

/// Parses a TOML file into `T`, reporting every shape error it has (a wrong
/// type, an unknown key, a missing one), each at the place toml points to.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigErrors> {
    deserialize_all(file, text, &parse_document(file, text)?)
}

/// Parses a TOML file's syntax, keeping the place of every key and value.
pub(crate) fn parse_document<'i>(file: &Path, text: &'i str) -> Result<Spanned<DeTable<'i>>, ConfigErrors> {
    DeTable::parse(text).map_err(|e| ConfigErrors::from(toml_error(file, text, &e)))
}

/// A toml error at the place it points to, with the key of its line.
fn toml_error(file: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().unwrap_or(0..0).start;
    // toml points at the offending key or value; show the whole line's key.
    ConfigError::new(Location::at(file, text, offset), key_at(text, offset), e.message().trim().to_string())
}

/// Deserializes `T` from `document` (parsed from `text`), reporting every
/// shape error. serde stops at the first, so the document is deserialized
/// again without the entry that error is in, for as long as errors are
/// found: an operator fixes a file in one pass. A key that is missing only
/// because it was taken out for its own error is not reported twice.
pub(crate) fn deserialize_all<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
    document: &Spanned<DeTable<'_>>,
) -> Result<T, ConfigErrors> {
    /// Errors reported from one file at most; a file with more is mostly
    /// not the kind of file expected.
    const MAX_ERRORS: usize = 50;
    // Copied only once an entry must be taken out of it.
    let mut root = std::borrow::Cow::Borrowed(document);
    let mut errors = ConfigErrors::default();
    // (the table's value starts here, the key taken out of it)
    let mut taken_out: Vec<(usize, String)> = Vec::new();
    loop {
        let e = match T::deserialize(toml::de::Deserializer::from(root.as_ref().clone())) {
            Ok(value) => return errors.into_result(value),
            Err(e) => e,
        };
        let Some(span) = e.span() else {
            errors.push(toml_error(file, text, &e));
            return Err(errors);
        };
        let echo = missing_field(e.message())
            .is_some_and(|field| taken_out.iter().any(|(at, key)| *at == span.start && key == field));
        if !echo {
            errors.push(toml_error(file, text, &e));
        }
        let root_span = root.span();
        let taken = take_out(root.to_mut().get_mut(), root_span.start, span.start);
        match taken {
            Some(taken) if errors.0.len() < MAX_ERRORS => taken_out.push(taken),
            _ => return Err(errors),
        }
    }
}

/// The field a serde "missing field `x`" message names.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Takes out of `table` (whose value starts at `table_at`) the innermost
/// entry that holds byte `offset`, returning where its table starts and its
/// key; `None` if no entry holds it. Nested tables are searched first and
/// all of them: a table a `[header]` opens has a span that need not cover
/// the keys below the header.
fn take_out(table: &mut DeTable<'_>, table_at: usize, offset: usize) -> Option<(usize, String)> {
    use toml::de::DeValue;
    for (_, value) in table.iter_mut() {
        let value_at = value.span().start;
        let taken = match value.get_mut() {
            DeValue::Table(inner) => take_out(inner, value_at, offset),
            DeValue::Array(items) => items.iter_mut().find_map(|item| {
                let item_at = item.span().start;
                match item.get_mut() {
                    DeValue::Table(inner) => take_out(inner, item_at, offset),
                    _ => None,
                }
            }),
            _ => None,
        };
        if taken.is_some() {
            return taken;
        }
    }
    let holder = table
        .iter()
        .find(|(key, value)| {
            let (key, value) = (key.span(), value.span());
            key.contains(&offset) || (value.start..value.end.max(value.start + 1)).contains(&offset)
        })
        .map(|(key, _)| key.clone())?;
    table.remove(&holder);
    Some((table_at, holder.get_ref().to_string()))
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
    fn the_line_index_places_every_offset_as_counting_from_the_top_does() {
        let text = "a = 1\n\nbb = 2\nlast";
        let lines = Lines::new(Path::new("t.toml"), text);
        for offset in 0..=text.len() + 3 {
            assert_eq!(lines.at(offset), Location::at(Path::new("t.toml"), text, offset), "offset {offset}");
        }
    }

    #[test]
    fn key_at_names_the_table_and_key() {
        let text = "[plugins.roster]\npath = \"x\"\nbogus = 1\n";
        assert_eq!(key_at(text, text.find("bogus").unwrap()), "plugins.roster.bogus");
        assert_eq!(key_at(text, 3), "plugins.roster");
    }
}
