//! The students data set the file benches sync: a CSV of ten fields and the
//! field-mapper fields that make a roster of it (with a computed username).

use std::io::Write;
use std::path::Path;

const FIRST: [&str; 8] = ["Ada", "Alan", "Grace", "Maria", "Kwame", "Li", "Noor", "Tomas"];
const LAST: [&str; 8] = ["Lovelace", "Turing", "Hopper", "Garcia", "Mensah", "Wei", "Haddad", "Novak"];
const CITIES: [&str; 4] = ["Springfield", "Riverton", "Lakeside", "Hillview"];

/// The field mapper's `fields`, as an inline TOML array: the transform the
/// file benches put in the path.
pub const MAPPER_FIELDS: &str = r#"[
  { name = "sis_id", from = "student_id" },
  { name = "given_name", from = "first_name" },
  { name = "family_name", from = "last_name" },
  { name = "email", from = "email" },
  { name = "grade", from = "grade" },
  { name = "school", from = "school" },
  { name = "city", from = "city" },
  { name = "status", from = "status" },
  { name = "score", from = "score" },
  { name = "username", template = "{first_name|lower|first:1}{last_name|lower}{student_id}" },
]"#;

/// The CSV header: the fields of [`student`], in order.
pub const HEADER: &str = "student_id,first_name,last_name,email,grade,school,city,status,score,updated";

/// Student `i`'s fields, in [`HEADER`]'s order; `changed` changes the score.
pub fn student(i: u64, changed: bool) -> [String; 10] {
    let score = if changed { 1000 + i % 7 } else { i * 7919 % 1000 };
    [
        i.to_string(),
        FIRST[(i % 8) as usize].into(),
        LAST[(i / 8 % 8) as usize].into(),
        format!("s{i}@students.example.edu"),
        (6 + i % 7).to_string(),
        format!("School {}", i % 40),
        CITIES[(i % 4) as usize].into(),
        "active".into(),
        score.to_string(),
        "2026-01-01".into(),
    ]
}

/// The source CSV: `rows` students, of whom every `changed_every`th has a
/// changed score when given.
pub fn write_source(path: &Path, rows: u64, changed_every: Option<u64>) -> std::io::Result<()> {
    let mut csv = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(csv, "{HEADER}")?;
    for i in 1..=rows {
        let changed = changed_every.is_some_and(|every| i % every == 0);
        writeln!(csv, "{}", student(i, changed).join(","))?;
    }
    csv.flush()
}
