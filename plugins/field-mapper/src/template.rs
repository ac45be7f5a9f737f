//! Templates that compute a text field from others:
//! `{field|filter|filter:arg}` placeholders between literal text.
//!
//! Filters: `lower`, `upper`, `trim`, `alnum` (keep letters and digits),
//! `first:N` (the first N characters), `default:TEXT` (when empty).

use synchost_plugin_sdk::{self as sdk, Value};

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

    pub(crate) fn render(&self, values: &[Value]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field { column, filters } => {
                    let mut text = sdk::value_to_text(&values[*column]);
                    for filter in filters {
                        text = filter.apply(text);
                    }
                    out.push_str(&text);
                }
            }
        }
        out
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
    fn apply(&self, text: String) -> String {
        match self {
            Filter::Lower => text.to_lowercase(),
            Filter::Upper => text.to_uppercase(),
            Filter::Trim => text.trim().to_string(),
            Filter::Alnum => text.chars().filter(|c| c.is_alphanumeric()).collect(),
            Filter::First(n) => text.chars().take(*n).collect(),
            Filter::Default(fallback) if text.is_empty() => fallback.clone(),
            Filter::Default(_) => text,
        }
    }
}
