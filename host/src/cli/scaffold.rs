//! `synchost plugin new`: a plugin project that builds out of the box into a
//! `.wasm` and passes `synchost plugin test` as it is, with a config and
//! fixtures for `plugin run` and `plugin test`. In Rust: a cdylib with a
//! release profile, a minimal example of its kind with a unit test, and the
//! SDK and the data model vendored (as this synchost carries them), so that
//! no registry has to serve them. In Python: an `app.py` on synchost's
//! Python kit, the kit and the WIT vendored, and a `build.sh` that runs
//! componentize-py.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::cli::out::outln;

/// The SDK's and the model's sources, written by build.rs.
mod vendored {
    include!(concat!(env!("OUT_DIR"), "/vendored.rs"));
}

/// Which kind of plugin to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Source,
    Destination,
    Transform,
}

/// The language to write it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    /// Built with componentize-py, on synchost's Python kit.
    Python,
    /// Built with componentize-js, on synchost's JavaScript kit.
    Js,
}

/// synchost's JavaScript kit, vendored into JavaScript projects.
const JS_KIT: &str = include_str!("../../../plugins/sdk-js/synchost-sdk.js");

/// Writes the WIT this synchost carries into `dir/under`.
fn write_wit(dir: &Path, under: &str) -> anyhow::Result<()> {
    for (path, content) in vendored::VENDORED {
        if let Some(wit) = path.strip_prefix("synchost-plugin-sdk/wit/") {
            write(dir, &format!("{under}/{wit}"), content)?;
        }
    }
    Ok(())
}

/// Writes `build.sh` from its template, executable.
fn write_build_script(dir: &Path, script: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    write(dir, "build.sh", script.as_bytes())?;
    let path = dir.join("build.sh");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make `{}` executable", path.display()))
}

const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.in");
const README: &str = include_str!("scaffold/README.md.in");

/// What a kind's project holds beside its Cargo.toml: (path, content).
fn kind_files(kind: Kind) -> (&'static str, Vec<(&'static str, &'static str)>, &'static str, &'static str) {
    match kind {
        Kind::Source => (
            include_str!("scaffold/source.rs"),
            vec![("config.json", "{\"count\": 25, \"page_size\": 10}\n")],
            "--plugin-config config.json",
            "--plugin-config config.json snapshot",
        ),
        Kind::Destination => (
            include_str!("scaffold/destination.rs"),
            vec![
                ("config.json", "{\"page_size\": 100}\n"),
                (
                    "ops.jsonl",
                    "{\"upsert\": {\"key\": \"1\", \"fields\": {\"name\": \"Ada\"}}}\n\
                     {\"update\": {\"key\": \"2\", \"fields\": {\"name\": \"Alan\"}, \"changed\": [\"name\"]}}\n\
                     {\"delete\": \"1\"}\n",
                ),
            ],
            "--plugin-config config.json",
            "--plugin-config config.json apply --ops ops.jsonl",
        ),
        Kind::Transform => (
            include_str!("scaffold/transform.rs"),
            vec![
                ("config.json", "{\"columns\": [\"name\"]}\n"),
                ("fixtures/input.csv", "id,name,city\n1,ada,london\n2,grace,new york\n"),
                ("fixtures/bad.jsonl", "{\"id\": \"9\", \"name\": 42}\n"),
            ],
            "--plugin-config config.json --fixtures fixtures",
            "--plugin-config config.json transform --input fixtures/input.csv",
        ),
    }
}

/// Whether `name` makes a crate name (and a file name) as it is.
fn name_problem(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => Some("is empty"),
        Some(c) if !c.is_ascii_lowercase() => Some("must start with a lower-case letter"),
        _ if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') => {
            Some("may hold only lower-case letters, digits, `-` and `_`")
        }
        _ => None,
    }
}

fn write(dir: &Path, relative: &str, content: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create `{}`", parent.display()))?;
    }
    std::fs::write(&path, content).with_context(|| format!("cannot write `{}`", path.display()))
}

pub(super) fn new(name: &str, kind: Kind, lang: Lang, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if let Some(problem) = name_problem(name) {
        bail!("plugin name `{name}` {problem}");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("`{}` exists and is not empty: choose another name or --dir", dir.display());
    }
    let kind_name = format!("{kind:?}").to_lowercase();
    let file = name.replace('-', "_");
    let (lib, extra, test_args, run_args) = kind_files(kind);
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{kind}}", &kind_name)
            .replace("{{file}}", &file)
            .replace("{{world}}", &format!("{kind_name}-plugin"))
            .replace("{{http_world}}", &format!("{kind_name}-plugin-http"))
            .replace("{{test_args}}", test_args)
            .replace("{{run_args}}", run_args)
    };
    for (path, content) in extra {
        write(&dir, path, content.as_bytes())?;
    }
    match lang {
        Lang::Rust => {
            write(&dir, "Cargo.toml", fill(CARGO_TOML).as_bytes())?;
            write(&dir, "README.md", fill(README).as_bytes())?;
            write(&dir, "src/lib.rs", fill(lib).as_bytes())?;
            write(&dir, ".gitignore", b"/target\n")?;
            for (path, content) in vendored::VENDORED {
                let content = match *path {
                    // In the repository the SDK finds the model beside the host.
                    "synchost-plugin-sdk/Cargo.toml" => String::from_utf8_lossy(content)
                        .replace("path = \"../../host/model\"", "path = \"../synchost-model\"")
                        .into_bytes(),
                    _ => content.to_vec(),
                };
                write(&dir.join("vendor"), path, &content)?;
            }
            outln!("made {} ({kind_name} plugin, Rust) in {}", name, dir.display());
            outln!("  cd {} && cargo build --release --target wasm32-wasip2", dir.display());
            outln!("  synchost plugin test target/wasm32-wasip2/release/{file}.wasm {test_args}");
        }
        Lang::Python => {
            let app = match kind {
                Kind::Source => include_str!("scaffold/python/source.py"),
                Kind::Destination => include_str!("scaffold/python/destination.py"),
                Kind::Transform => include_str!("scaffold/python/transform.py"),
            };
            write(&dir, "app.py", fill(app).as_bytes())?;
            write(&dir, "README.md", fill(include_str!("scaffold/python/README.md.in")).as_bytes())?;
            write_build_script(&dir, &fill(include_str!("scaffold/python/build.sh.in")))?;
            write_wit(&dir, "vendor/wit")?;
            for (path, content) in vendored::VENDORED {
                if let Some(kit_file) = path.strip_prefix("sdk-python/") {
                    write(&dir, &format!("vendor/{kit_file}"), content)?;
                }
            }
            outln!("made {} ({kind_name} plugin, Python) in {}", name, dir.display());
            outln!("  {}/build.sh   (needs componentize-py==0.25.1)", dir.display());
            outln!("  synchost plugin test {file}.wasm {test_args}");
        }
        Lang::Js => {
            let app = match kind {
                Kind::Source => include_str!("scaffold/js/source.js"),
                Kind::Destination => include_str!("scaffold/js/destination.js"),
                Kind::Transform => include_str!("scaffold/js/transform.js"),
            };
            write(&dir, "app.js", fill(app).as_bytes())?;
            write(&dir, "package.json", fill(include_str!("scaffold/js/package.json.in")).as_bytes())?;
            write(&dir, "README.md", fill(include_str!("scaffold/js/README.md.in")).as_bytes())?;
            write(&dir, ".gitignore", b"/node_modules\n*.wasm\n")?;
            write_build_script(&dir, &fill(include_str!("scaffold/js/build.sh.in")))?;
            // Beside the app: componentize-js resolves imports within its directory.
            write(&dir, "synchost-sdk.js", JS_KIT.as_bytes())?;
            write_wit(&dir, "wit")?;
            outln!("made {} ({kind_name} plugin, JavaScript) in {}", name, dir.display());
            outln!("  cd {} && npm install && ./build.sh", dir.display());
            outln!("  synchost plugin test {file}.wasm {test_args}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
