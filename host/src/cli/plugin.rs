//! `synchost plugin ...`: look at a plugin file, and sign and verify plugins.

use crate::cli::out::outln;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sha2::{Digest, Sha256};

use super::output;
use crate::config::HostConfig;
use crate::plugin::{PluginSetup, config_schema, plugin_info};
use crate::signing::{self, TrustedKey};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Show a plugin's kind, world, WIT version and what its info() says.
    #[command(after_help = "Example:\n  synchost plugin inspect plugins/field_mapper.wasm")]
    Inspect {
        /// The component file (.wasm).
        file: PathBuf,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a plugin project that builds into a .wasm as it is, with a
    /// minimal example of its kind, a unit test, and fixtures that pass
    /// `plugin test`.
    #[command(after_help = "Examples:\n  synchost plugin new my-source --kind source\n  \
        synchost plugin new upper --kind transform --dir ./plugins/upper")]
    New {
        /// The plugin's name: its crate's and its file's.
        name: String,
        #[arg(long, value_enum)]
        kind: super::scaffold::Kind,
        #[arg(long, value_enum, default_value = "rust")]
        lang: super::scaffold::Lang,
        /// Where to make it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Call a plugin file once, with no tenant file and no pinned digest, and
    /// print what it returned: grants and config come from the flags.
    #[command(
        after_help = "Examples:\n  synchost plugin run my_source.wasm --plugin-config config.json --dir ./data:/data snapshot\n  \
        synchost plugin run my_source.wasm --plugin-config config.json --dir ./data:/data events --cursor 42\n  \
        synchost plugin run my_mapper.wasm --plugin-config config.json transform --input people.csv --key id\n  \
        synchost plugin run my_dest.wasm --plugin-config config.json --dir ./out:/out:rw apply --ops ops.jsonl"
    )]
    Run {
        #[command(flatten)]
        target: super::plugin_run::RunTarget,
        #[command(subcommand)]
        call: super::plugin_run::Call,
    },
    /// Check a plugin file against what the host expects of its kind: a
    /// report line per check, exit 1 if any fails. A destination is written
    /// to: give it a scratch directory or database.
    #[command(
        after_help = "Examples:\n  synchost plugin test my_source.wasm --plugin-config config.json --dir ./data:/data\n  \
        synchost plugin test my_dest.wasm --plugin-config config.json --dir ./scratch:/out:rw\n  \
        synchost plugin test my_mapper.wasm --plugin-config config.json --fixtures tests/fixtures"
    )]
    Test {
        #[command(flatten)]
        target: super::plugin_run::RunTarget,
        /// A directory with input.csv|jsonl and bad.csv|jsonl (transforms)
        /// or rows.jsonl (destinations).
        #[arg(long, value_name = "DIR")]
        fixtures: Option<PathBuf>,
    },
    /// Write the bundled plugins to DIR and print the tenant-file lines that
    /// pin them (path and sha256).
    #[command(after_help = "Example:\n  synchost plugin export plugins/")]
    Export {
        /// Where to write them (made if need be).
        dir: PathBuf,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a signing key: writes the secret key to FILE and prints the public
    /// key to put in synchost.toml's `trusted_keys`.
    #[command(after_help = "Example:\n  synchost plugin keygen publisher.key")]
    Keygen {
        /// Where to write the secret key; it must not exist yet.
        file: PathBuf,
    },
    /// Sign a plugin file: writes FILE.wasm.sig beside it.
    #[command(after_help = "Example:\n  synchost plugin sign plugins/my_source.wasm --key publisher.key")]
    Sign {
        /// The component file (.wasm) to sign.
        file: PathBuf,
        /// The secret key file made by `synchost plugin keygen`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a plugin's signature against the host's trusted keys (or --key).
    #[command(after_help = "Example:\n  synchost plugin verify plugins/my_source.wasm")]
    Verify {
        /// The component file (.wasm); its signature is FILE.sig.
        file: PathBuf,
        /// Trust this public key (`ed25519:...`) instead of synchost.toml's.
        #[arg(long)]
        key: Option<String>,
    },
    /// Return a tenant's plugin to its previous good version in the running
    /// daemon; it holds until the tenant file changes again.
    #[command(after_help = "Example:\n  synchost plugin rollback acme lms_fields")]
    Rollback {
        /// The tenant, by its file's name (tenants/TENANT.toml).
        tenant: String,
        /// The plugin, by its name in the tenant file (`[plugins.NAME]`).
        plugin: String,
        /// Print JSON (errors too) instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl PluginCommand {
    /// Whether the command was asked for JSON output.
    pub(super) fn json(&self) -> bool {
        match self {
            PluginCommand::Inspect { json, .. }
            | PluginCommand::Rollback { json, .. }
            | PluginCommand::Export { json, .. } => *json,
            PluginCommand::Run { target, .. } | PluginCommand::Test { target, .. } => target.json,
            PluginCommand::Keygen { .. }
            | PluginCommand::Sign { .. }
            | PluginCommand::Verify { .. }
            | PluginCommand::New { .. } => false,
        }
    }
}

pub fn run(config: &Path, command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Inspect { file, json } => inspect(&file, json),
        PluginCommand::Export { dir, json } => super::init::export(&dir, json),
        PluginCommand::New { name, kind, lang, dir } => super::scaffold::new(&name, kind, lang, dir),
        PluginCommand::Run { target, call } => super::plugin_run::run(target, call),
        PluginCommand::Test { target, fixtures } => super::plugin_test::run(target, fixtures),
        PluginCommand::Keygen { file } => keygen(&file),
        PluginCommand::Sign { file, key } => sign(&file, &key),
        PluginCommand::Verify { file, key } => verify(config, &file, key.as_deref()),
        PluginCommand::Rollback { tenant, plugin, json } => super::admin::rollback(config, tenant, plugin, json),
    }
}

fn inspect(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    // The user's compiled-code cache: a Python or JavaScript component takes
    // a minute to compile, and is inspected again and again unchanged.
    let (engine, compiled, name) = super::plugin_run::compile(file)?;
    let setup = PluginSetup::bare(&name);
    let info = plugin_info(&engine, &compiled, &setup)?;
    let schema = config_schema(&engine, &compiled, &setup)?;
    output::inspection(file, &compiled, &info, schema.as_deref(), json);
    Ok(ExitCode::SUCCESS)
}

fn keygen(file: &Path) -> anyhow::Result<ExitCode> {
    let (secret, public) = signing::generate_key()?;
    write_new_private(file, &secret).with_context(|| format!("cannot write the secret key to `{}`", file.display()))?;
    eprintln!("secret key written to {}; keep it out of the host and out of version control", file.display());
    outln!("{public}");
    Ok(ExitCode::SUCCESS)
}

/// Creates `file` readable by its owner only, refusing to overwrite a key.
fn write_new_private(file: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file)?;
    out.write_all(text.as_bytes())
}

fn digest_of(file: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn sign(file: &Path, key: &Path) -> anyhow::Result<ExitCode> {
    let key = signing::read_secret_key(key)?;
    let digest = digest_of(file)?;
    let signature_file = signing::signature_path(file);
    std::fs::write(&signature_file, signing::sign(&key, &digest))
        .with_context(|| format!("cannot write `{}`", signature_file.display()))?;
    outln!("{}: signed (sha256 {digest}) -> {}", file.display(), signature_file.display());
    Ok(ExitCode::SUCCESS)
}

fn verify(config: &Path, file: &Path, key: Option<&str>) -> anyhow::Result<ExitCode> {
    let trusted = match key {
        Some(key) => vec![TrustedKey::parse(key).map_err(anyhow::Error::msg)?],
        None => HostConfig::load(config).map_err(|e| anyhow::anyhow!("{e}"))?.trusted_keys,
    };
    if trusted.is_empty() {
        anyhow::bail!("no trusted keys: list them in `trusted_keys` of {} or pass --key", config.display());
    }
    let digest = digest_of(file)?;
    match signing::check(file, &digest, &trusted, true) {
        Ok(Some(signer)) => {
            outln!("{}: good signature by {signer} (sha256 {digest})", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => unreachable!("a required signature is never absent without an error"),
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
