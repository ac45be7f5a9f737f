//! Typed fields: a column's values converted to the type the tenant file
//! names for the field.

use serde::Deserialize;
use synchost_plugin_sdk::{ColumnBuilder, Error, Table, ValueRef};

/// The types a field may be converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FieldType {
    Integer,
    Float,
    Boolean,
    Text,
    /// A calendar date, kept as `YYYY-MM-DD` text.
    Date,
}

impl FieldType {
    fn name(self) -> &'static str {
        match self {
            FieldType::Integer => "an integer",
            FieldType::Float => "a number",
            FieldType::Boolean => "a boolean (true/false, yes/no, 1/0)",
            FieldType::Text => "text",
            FieldType::Date => "a date (YYYY-MM-DD)",
        }
    }
}

/// Converts each column whose field has a type; the first value that does
/// not convert fails the batch, by row key, field and value.
pub(crate) fn columns(table: &mut Table, types: &[Option<FieldType>]) -> Result<(), Error> {
    for (index, to) in types.iter().enumerate() {
        let Some(to) = *to else { continue };
        let column = &table.values[index];
        let mut out = ColumnBuilder::with_capacity(column.len());
        for row in 0..column.len() {
            match convert(column.get(row), to) {
                Ok(Converted::Value(value)) => out.push(value),
                Ok(Converted::Text(text)) => out.push_text(&text),
                Err(()) => {
                    return Err(Error::Rejected(format!(
                        "row `{}`: field `{}`: `{}` is not {}",
                        table.key(row),
                        table.columns[index],
                        column.get(row).to_text(),
                        to.name()
                    )));
                }
            }
        }
        table.values[index] = out.finish();
    }
    Ok(())
}

/// A converted value: one borrowed from the input, or text made for it.
enum Converted<'a> {
    Value(ValueRef<'a>),
    Text(String),
}

fn value(value: ValueRef<'_>) -> Result<Converted<'_>, ()> {
    Ok(Converted::Value(value))
}

fn convert(input: ValueRef<'_>, to: FieldType) -> Result<Converted<'_>, ()> {
    let text = input.to_text();
    let trimmed = text.trim();
    if matches!(input, ValueRef::Null) || (matches!(input, ValueRef::Text(_)) && trimmed.is_empty()) {
        return value(ValueRef::Null);
    }
    match (to, input) {
        (FieldType::Text, ValueRef::Text(_)) => value(input),
        (FieldType::Text, _) => Ok(Converted::Text(text.into_owned())),
        (FieldType::Integer, ValueRef::Integer(_)) => value(input),
        (FieldType::Integer, ValueRef::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            value(ValueRef::Integer(f as i64))
        }
        (FieldType::Integer, ValueRef::Text(_)) => {
            trimmed.parse().map(|i| Converted::Value(ValueRef::Integer(i))).map_err(drop)
        }
        (FieldType::Float, ValueRef::Float(_)) => value(input),
        (FieldType::Float, ValueRef::Integer(i)) => value(ValueRef::Float(i as f64)),
        (FieldType::Float, ValueRef::Text(_)) => {
            trimmed.parse().map(|f| Converted::Value(ValueRef::Float(f))).map_err(drop)
        }
        (FieldType::Boolean, ValueRef::Boolean(_)) => value(input),
        (FieldType::Boolean, ValueRef::Integer(0)) => value(ValueRef::Boolean(false)),
        (FieldType::Boolean, ValueRef::Integer(1)) => value(ValueRef::Boolean(true)),
        (FieldType::Boolean, ValueRef::Text(_)) => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" => value(ValueRef::Boolean(true)),
            "false" | "no" | "n" | "0" => value(ValueRef::Boolean(false)),
            _ => Err(()),
        },
        (FieldType::Date, ValueRef::Text(_)) => date(trimmed).map(Converted::Text),
        _ => Err(()),
    }
}

/// `YYYY-MM-DD` (or the date part of `YYYY-MM-DDThh:mm…`), normalised to
/// zero-padded digits, for a day that exists.
fn date(text: &str) -> Result<String, ()> {
    let day_part = text.split(['T', ' ']).next().unwrap_or_default();
    let mut parts = day_part.split(['-', '/']);
    let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(());
    };
    let (y, m, d): (u32, u32, u32) = (y.parse().map_err(drop)?, m.parse().map_err(drop)?, d.parse().map_err(drop)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(()),
    };
    if !(1..=9999).contains(&y) || d == 0 || d > days {
        return Err(());
    }
    Ok(format!("{y:04}-{m:02}-{d:02}"))
}
