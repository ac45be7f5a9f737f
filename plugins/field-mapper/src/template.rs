//! Templates that compute a text field from others:
//! `{field|filter|filter:arg}` placeholders between literal text.
//!
//! Filters: `lower`, `upper`, `trim`, `alnum` (keep letters and digits),
//! `first:N` (the first N characters), `default:TEXT` (when empty).
//!
//! A template renders once per row, a million times for a large page, so a
//! value is read straight from its column and passes through the filters
//! borrowed: a filter copies the text only when it has to change it.

use std::borrow::Cow;
use std::fmt::Write;

use synchost_plugin_sdk::{Column, ColumnBuilder};

pub(crate) struct Template {
    parts: Vec<Part>,
}

enum Part {
    Literal(String),
    Field { column: usize, filters: Vec<Filter> },
}

enum Filter {
    Lower,
    Upper,
    Trim,
    Alnum,
    First(usize),
    Default(String),
}

impl Template {
    /// Parses a template against the input's column names; an unknown field or
    /// filter is an error that names it.
    pub(crate) fn parse(text: &str, columns: &[String]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..].find('}').ok_or_else(|| format!("unclosed `{{` in `{text}`"))? + open;
            let mut pieces = rest[open + 1..close].split('|');
            let name = pieces.next().unwrap_or_default().trim();
            let column = columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| format!("template `{text}` names `{name}`, which the input does not have"))?;
            let filters = pieces.map(parse_filter).collect::<Result<_, _>>()?;
            parts.push(Part::Field { column, filters });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// A text column of the template rendered for each of `rows` of
    /// `columns` (the input's, which it was parsed against).
    pub(crate) fn render_column(&self, columns: &[Column], rows: &[u32]) -> Column {
        let mut column = ColumnBuilder::with_capacity(rows.len());
        for &row in rows {
            column.push_text_with(|out| self.render(columns, row as usize, out));
        }
        column.finish()
    }

    /// Renders the template for row `row` of `columns` onto the end of `out`.
    fn render(&self, columns: &[Column], row: usize, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field { column, filters } if filters.is_empty() => {
                    write!(out, "{}", columns[*column].get(row)).expect("writing to a String cannot fail");
                }
                Part::Field { column, filters } => {
                    let text = columns[*column].get(row).to_text();
                    out.push_str(&filters.iter().fold(text, |text, filter| filter.apply(text)));
                }
            }
        }
    }
}

fn parse_filter(text: &str) -> Result<Filter, String> {
    let (name, arg) = match text.split_once(':') {
        Some((name, arg)) => (name.trim(), Some(arg)),
        None => (text.trim(), None),
    };
    Ok(match (name, arg) {
        ("lower", None) => Filter::Lower,
        ("upper", None) => Filter::Upper,
        ("trim", None) => Filter::Trim,
        ("alnum", None) => Filter::Alnum,
        ("first", Some(n)) => Filter::First(n.trim().parse().map_err(|_| format!("`first:{n}` needs a number"))?),
        ("default", Some(text)) => Filter::Default(text.to_string()),
        _ => return Err(format!("unknown template filter `{text}`")),
    })
}

impl Filter {
    fn apply<'a>(&'a self, text: Cow<'a, str>) -> Cow<'a, str> {
        match self {
            Filter::Lower => recase(text, false),
            Filter::Upper => recase(text, true),
            Filter::Trim => substring(text, str::trim),
            Filter::Alnum if text.chars().all(char::is_alphanumeric) => text,
            Filter::Alnum => {
                let mut text = text.into_owned();
                text.retain(char::is_alphanumeric);
                Cow::Owned(text)
            }
            Filter::First(n) => substring(text, |s| s.char_indices().nth(*n).map_or(s, |(end, _)| &s[..end])),
            Filter::Default(fallback) if text.is_empty() => Cow::Borrowed(fallback),
            Filter::Default(_) => text,
        }
    }
}

/// `text` in upper or lower case. ASCII text (most names and ids) is left as
/// it is when it already is in that case, and else changed in place, which
/// for ASCII is what the full Unicode mapping does.
fn recase(text: Cow<'_, str>, upper: bool) -> Cow<'_, str> {
    if !text.is_ascii() {
        return Cow::Owned(if upper { text.to_uppercase() } else { text.to_lowercase() });
    }
    let changes = |b: u8| if upper { b.is_ascii_lowercase() } else { b.is_ascii_uppercase() };
    if !text.bytes().any(changes) {
        return text;
    }
    let mut text = text.into_owned();
    if upper {
        text.make_ascii_uppercase();
    } else {
        text.make_ascii_lowercase();
    }
    Cow::Owned(text)
}

/// The part of `text` that `part` picks, borrowed when `text` is; text that
/// is already a copy is copied again only if the part is shorter.
fn substring<'a>(text: Cow<'a, str>, part: impl Fn(&str) -> &str) -> Cow<'a, str> {
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(part(s)),
        Cow::Owned(s) if part(&s).len() == s.len() => Cow::Owned(s),
        Cow::Owned(s) => Cow::Owned(part(&s).to_string()),
    }
}
