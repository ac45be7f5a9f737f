//! `synchost init DIR` and `synchost plugin export DIR`: what a new operator
//! starts from. `init` makes a host directory that validates and syncs as it
//! is (a CSV of people mapped into a file destination), with the bundled
//! plugins exported and pinned; `export` writes the bundled plugins out and
//! prints the tenant-file lines that pin them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::bundled::{self, BundledPlugin};
use crate::cli::out::outln;

/// The host config `init` writes.
const HOST_CONFIG: &str = r#"# synchost's host config. Paths are relative to this file.
state_dir = "state"        # runs, cursors, dead letters, run archives (SQLite)
plugin_dir = "plugins"     # where tenant files' plugin paths start
tenants_dir = "tenants"    # one TENANT.toml per tenant

# Defaults for every plugin call and run; tenant files may lower or raise them.
[limits]
call_timeout = "30s"
memory = "256 MiB"
"#;

/// The people `init`'s example pipeline reads.
const PEOPLE_CSV: &str = "id,first_name,last_name,status\n1001,Ada,Lovelace,active\n1002,Alan,Turing,active\n\
1003,Grace,Hopper,withdrawn\n";

/// The example tenant `init` writes; `{…_sha256}` are filled in with the
/// digests of the plugins it exports.
const EXAMPLE_TENANT: &str = r#"# A tenant: one customer's connectors, grants and pipelines. This one keeps
# data/out (a file destination) in step with data/in/people.csv.

[plugins.people]
path = "file_source.wasm"
sha256 = "{file_source_sha256}"
dirs = [{ host = "../data/in", guest = "/in" }]
config = { snapshot = "/in/people.csv", key = "id" }

[plugins.fields]
path = "field_mapper.wasm"
sha256 = "{field_mapper_sha256}"
[plugins.fields.config]
fields = [
  { name = "id", from = "id" },
  { name = "name", template = "{first_name} {last_name}" },
  { name = "login", template = "{first_name|lower|first:1}{last_name|lower|alnum}" },
]
filter = { field = "status", not_equals = "withdrawn" }

[plugins.directory]
path = "file_destination.wasm"
sha256 = "{file_destination_sha256}"
dirs = [{ host = "../data/out", guest = "/out", write = true }]
config = { dir = "/out" }

[pipelines.people]
mode = "diff"
source = "people"
transforms = ["fields"]
destination = "directory"
schedule = "every 1m"
"#;

pub(super) fn init(dir: &Path) -> anyhow::Result<ExitCode> {
    let config = dir.join("synchost.toml");
    if config.exists() {
        anyhow::bail!("`{}` exists already: init makes a new host directory, it changes none", config.display());
    }
    for sub in ["tenants", "plugins", "data/in", "data/out"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create `{}`", dir.join(sub).display()))?;
    }
    let digests = export_all(&dir.join("plugins"))?;
    let digest = |plugin: &BundledPlugin| digests.iter().find(|(name, _)| *name == plugin.file_name).map(|(_, d)| d);
    let tenant = EXAMPLE_TENANT
        .replace("{file_source_sha256}", digest(&bundled::FILE_SOURCE).expect("exported"))
        .replace("{field_mapper_sha256}", digest(&bundled::FIELD_MAPPER).expect("exported"))
        .replace("{file_destination_sha256}", digest(&bundled::FILE_DESTINATION).expect("exported"));
    write(&config, HOST_CONFIG)?;
    write(&dir.join("tenants/example.toml"), &tenant)?;
    write(&dir.join("data/in/people.csv"), PEOPLE_CSV)?;
    let config = config.display();
    outln!("a host directory in {}:", dir.display());
    outln!("  synchost.toml, tenants/example.toml, plugins/ (the bundled plugins), data/in/people.csv");
    outln!("next:");
    outln!("  synchost --config {config} validate");
    outln!("  synchost --config {config} sync example/people");
    outln!("  synchost --config {config} run        # every pipeline on its schedule");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn export(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let digests = export_all(dir)?;
    if json {
        let list: Vec<_> =
            digests.iter().map(|(file, sha256)| serde_json::json!({ "file": file, "sha256": sha256 })).collect();
        super::output::print_json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("# {} plugins written to {}; to use one, paste its lines into a tenant file", digests.len(), dir.display());
    outln!("# (its path is relative to synchost.toml's plugin_dir) and name it:");
    for (file, sha256) in &digests {
        let name = file.trim_end_matches(".wasm");
        outln!("\n[plugins.{name}]\npath = \"{file}\"\nsha256 = \"{sha256}\"");
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes every bundled plugin into `dir`; returns (file name, sha256) of each.
fn export_all(dir: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    bundled::ALL
        .iter()
        .map(|plugin| {
            write_bytes(&dir.join(plugin.file_name), plugin.bytes)?;
            Ok((plugin.file_name, hex::encode(Sha256::digest(plugin.bytes))))
        })
        .collect()
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    write_bytes(path, text.as_bytes())
}

fn write_bytes(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write `{}`", path.display()))
}
