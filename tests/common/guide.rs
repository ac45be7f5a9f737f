//! docs/connectors.md as a stranger follows it: the fenced blocks of one of
//! its sections, in order, in an empty directory outside the repository;
//! a block whose info string names a file (```python file=pick/app.py)
//! is written there, a `sh` block is run by bash, with this build's
//! `synchost` first on PATH.

use std::path::Path;
use std::process::Command;

/// The guide's text.
pub fn text() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::read_to_string(repo.join("docs/connectors.md")).unwrap()
}

/// The fenced blocks of `section` (a heading line, e.g. "## A transform in
/// Rust"): `(info string, body)`, in order.
pub fn blocks(section: &str) -> Vec<(String, String)> {
    let guide = text();
    let start = guide.find(section).unwrap_or_else(|| panic!("the guide has no section `{section}`"));
    let rest = &guide[start + section.len()..];
    let rest = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut found = Vec::new();
    let mut lines = rest.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            found.push((info.to_string(), body.join("\n") + "\n"));
        }
    }
    found
}

/// The file a block's info string names, if it names one.
fn file_of(info: &str) -> Option<&str> {
    info.split_whitespace().find_map(|word| word.strip_prefix("file="))
}

/// Writes the file blocks of `section` into `dir`.
pub fn write_files(section: &str, dir: &Path) {
    for (info, body) in blocks(section) {
        if let Some(file) = file_of(&info) {
            write(dir, file, &body);
        }
    }
}

fn write(dir: &Path, file: &str, body: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

/// Runs one of the guide's command blocks in `dir` as a shell runs it, with
/// this build's synchost and then `tools` first on PATH; returns what it
/// printed, asserting it succeeded.
pub fn run(script: &str, dir: &Path, tools: &[&Path]) -> String {
    let bin_dir = Path::new(super::BIN).parent().unwrap();
    let mut path: Vec<String> = vec![bin_dir.display().to_string()];
    path.extend(tools.iter().map(|t| t.display().to_string()));
    path.push(std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path.join(":"))
        .env("XDG_CACHE_HOME", super::shared_cache_dir().join("xdg"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the guide's commands failed:\n{script}\n---\n{text}");
    text
}

/// Follows `section` in `dir`: writes its files and runs its commands, in
/// the guide's order, each block through `edit` first (to point it at a
/// test's own port, say). Returns each command block as run, with what it
/// printed.
pub fn follow(section: &str, dir: &Path, tools: &[&Path], edit: impl Fn(&str) -> String) -> Vec<(String, String)> {
    let mut ran = Vec::new();
    for (info, body) in blocks(section) {
        if let Some(file) = file_of(&info) {
            write(dir, file, &edit(&body));
        } else if info == "sh" {
            let script = edit(&body);
            let printed = run(&script, dir, tools);
            ran.push((script, printed));
        }
    }
    ran
}

/// `script` without the lines that start with one of `prefixes`: commands a
/// test has already done its own way, such as installing a pinned tool.
pub fn without_lines(script: &str, prefixes: &[&str]) -> String {
    script
        .lines()
        .filter(|line| !prefixes.iter().any(|p| line.starts_with(p)))
        .map(|line| format!("{line}\n"))
        .collect()
}
