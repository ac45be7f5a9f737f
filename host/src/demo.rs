//! `synchost demo`: a school district's student roster (the SIS) kept in step
//! with a learning platform (the LMS), built from nothing in a directory and
//! narrated step by step: a diff sync, changes at the source and a manual edit
//! at the destination, a second diff sync that a guard blocks until an operator
//! approves it, an idle one, then an event sync that resumes from its cursor.

use crate::cli::out::{out, outln};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::bundled;
use crate::runtime::{Runtime, Tenants};
use crate::state::PipelineId;
use crate::sync::{SyncOptions, SyncReport};

const STUDENTS: &str = "\
student_id,first_name,last_name,grade,status
1001,Ada,Lovelace,9,active
1002,Alan,Turing,10,active
1003,Grace,Hopper,11,active
1004,Maria,Garcia,9,active
1005,Kwame,Mensah,12,active
";

/// The roster after a week: Maria's family name changed, Kwame withdrew, and
/// Li Wei enrolled.
const STUDENTS_LATER: &str = "\
student_id,first_name,last_name,grade,status
1001,Ada,Lovelace,9,active
1002,Alan,Turing,10,active
1003,Grace,Hopper,11,active
1004,Maria,Garcia-Lopez,9,active
1005,Kwame,Mensah,12,withdrawn
1006,Li,Wei,10,active
";

const FIRST_EVENTS: &str = r#"{"op":"upsert","row":{"student_id":"2001","first_name":"Noor","last_name":"Haddad","grade":"9","status":"active"}}
{"op":"upsert","row":{"student_id":"2002","first_name":"Tomas","last_name":"Novak","grade":"11","status":"active"}}
{"op":"upsert","row":{"student_id":"2001","first_name":"Noor","last_name":"Haddad","grade":"10","status":"active"}}
"#;

const LATER_EVENTS: &str = r#"{"op":"delete","key":"2002"}
{"op":"upsert","row":{"student_id":"2003","first_name":"Aiko","last_name":"Tanaka","grade":"12","status":"active"}}
"#;

/// Builds the demo in `dir` (or a new temporary directory) and runs it.
pub fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
            if std::fs::read_dir(&dir)?.next().is_some() {
                anyhow::bail!("`{}` is not empty; the demo needs an empty or new directory", dir.display());
            }
            std::path::absolute(dir)?
        }
        None => tempfile::Builder::new().prefix("synchost-demo-").tempdir()?.keep(),
    };
    let config = build(&dir)?;
    narrate(&dir, &config)
}

/// Writes the host config, the tenant file, the plugins and the SIS data.
fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    for sub in ["plugins", "tenants", "data/sis", "data/lms", "data/lms-live"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    for plugin in bundled::ALL {
        std::fs::write(dir.join("plugins").join(plugin.file_name), plugin.bytes)?;
    }
    std::fs::write(dir.join("data/sis/students.csv"), STUDENTS)?;
    std::fs::write(dir.join("data/sis/changes.jsonl"), "")?;
    let config = dir.join("synchost.toml");
    std::fs::write(
        &config,
        "# The host: where state, plugins and tenant files live.\n\
         state_dir = \"state\"\nplugin_dir = \"plugins\"\ntenants_dir = \"tenants\"\n\n\
         [limits]\ncall_timeout = \"10s\"\nmemory = \"128 MiB\"\n",
    )?;
    let digest = |bytes: &[u8]| hex::encode(Sha256::digest(bytes));
    let tenant = format!(
        r#"# The district syncs its student information system (SIS) into its
# learning platform (LMS), twice: a nightly full diff, and live changes.

[plugins.sis]
path = "{source}"
sha256 = "{source_digest}"
dirs = [{{ host = "../data/sis", guest = "/sis" }}]
config = {{ snapshot = "/sis/students.csv", changelog = "/sis/changes.jsonl", key = "student_id" }}

[plugins.lms_fields]
path = "{mapper}"
sha256 = "{mapper_digest}"
[plugins.lms_fields.config]
fields = [
  {{ name = "sis_id", from = "student_id" }},
  {{ name = "given_name", from = "first_name" }},
  {{ name = "family_name", from = "last_name" }},
  {{ name = "grade", from = "grade" }},
  {{ name = "username", template = "{{first_name|lower|first:1}}{{last_name|lower|alnum}}{{student_id}}" }},
  {{ name = "email", template = "{{first_name|lower|alnum}}.{{last_name|lower|alnum}}@students.example.edu" }},
]
filter = {{ field = "status", not_equals = "withdrawn" }}

[plugins.lms]
path = "{destination}"
sha256 = "{destination_digest}"
dirs = [{{ host = "../data/lms", guest = "/lms", write = true }}]
config = {{ dir = "/lms" }}

[plugins.lms_live]
path = "{destination}"
sha256 = "{destination_digest}"
dirs = [{{ host = "../data/lms-live", guest = "/lms", write = true }}]
config = {{ dir = "/lms" }}

[pipelines.roster]
mode = "diff"
source = "sis"
transforms = ["lms_fields"]
destination = "lms"
schedule = "every 1h"

[pipelines.live]
mode = "event"
source = "sis"
transforms = ["lms_fields"]
destination = "lms_live"
schedule = "every 5s"
"#,
        source = bundled::FILE_SOURCE.file_name,
        source_digest = digest(bundled::FILE_SOURCE.bytes),
        mapper = bundled::FIELD_MAPPER.file_name,
        mapper_digest = digest(bundled::FIELD_MAPPER.bytes),
        destination = bundled::FILE_DESTINATION.file_name,
        destination_digest = digest(bundled::FILE_DESTINATION.bytes),
    );
    std::fs::write(dir.join("tenants/district.toml"), tenant)?;
    Ok(config)
}

fn narrate(dir: &Path, config: &Path) -> anyhow::Result<()> {
    outln!("synchost demo in {}", dir.display());
    let runtime = Runtime::load(config, Tenants::All).map_err(|e| anyhow::anyhow!("{e}"))?;
    let roster = PipelineId::new("district", "roster");
    let live = PipelineId::new("district", "live");
    let lms = dir.join("data/lms");

    step("1. First diff sync: the SIS roster (5 students) fills the empty LMS");
    show(&sync(&runtime, &roster)?);
    out!("{}", table(&lms)?);

    step(
        "2. A week later: Maria's family name changes, Kwame withdraws, Li Wei enrolls;\n   meanwhile an LMS admin adds a field the sync does not own to Ada's record",
    );
    std::fs::write(dir.join("data/sis/students.csv"), STUDENTS_LATER)?;
    add_manual_field(&lms, "1001", "homeroom", "B12")?;
    let blocked = sync_allowing_block(&runtime, &roster)?;
    outln!("   run {}: BLOCKED, nothing written: {}", blocked.run, blocked.error.as_deref().unwrap_or_default());
    outln!("   (3 changes to 5 records is 60%, above the pipeline's max_change_ratio of 20%)");

    step(&format!("2b. An operator checks the plan and approves it: `synchost approve {}`", blocked.run));
    let stop = AtomicBool::new(false);
    let approved = runtime.job(&roster, &stop, SyncOptions::default())?.approve(blocked.run)?;
    show(&approved);
    out!("{}", table(&lms)?);
    outln!("   (Ada's `homeroom` survived: only the fields the transform emits are owned)");

    step("3. Nothing changed at the source: the next diff sync changes nothing");
    show(&sync(&runtime, &roster)?);

    step("4. Event sync: three changes arrive on the SIS changelog (Noor's grade twice)");
    append(&dir.join("data/sis/changes.jsonl"), FIRST_EVENTS)?;
    show(&sync(&runtime, &live)?);
    out!("{}", table(&dir.join("data/lms-live"))?);

    step("5. Two more events (Tomas leaves, Aiko arrives): the sync resumes from its cursor");
    append(&dir.join("data/sis/changes.jsonl"), LATER_EVENTS)?;
    show(&sync(&runtime, &live)?);
    out!("{}", table(&dir.join("data/lms-live"))?);

    step("Explore");
    // The binary as it was run, so that the commands work as printed even
    // when synchost is not on the PATH (after `cargo run`, say).
    let bin = std::env::current_exe().map_or_else(|_| "synchost".to_string(), |p| p.display().to_string());
    let config = config.display();
    outln!("   {bin} --config {config} plan district/roster");
    outln!("   {bin} --config {config} replay 1");
    outln!("   {bin} --config {config} runs list");
    outln!("   {bin} --config {config} validate");
    outln!("   {bin} --config {config} run        # both pipelines on their schedules");
    outln!("   {bin} --config {config} status     # tenants, plugin versions, last runs");
    Ok(())
}

fn step(title: &str) {
    outln!("\n{title}");
}

fn sync(runtime: &Runtime, id: &PipelineId) -> anyhow::Result<SyncReport> {
    let report = sync_allowing_block(runtime, id)?;
    if let Some(error) = &report.error {
        anyhow::bail!("the demo's sync of {id} did not succeed: {error}");
    }
    Ok(report)
}

fn sync_allowing_block(runtime: &Runtime, id: &PipelineId) -> anyhow::Result<SyncReport> {
    let stop = AtomicBool::new(false);
    let report = runtime.job(id, &stop, SyncOptions::default())?.run()?;
    if report.status != crate::state::RunStatus::Succeeded && report.status != crate::state::RunStatus::Blocked {
        anyhow::bail!("the demo's sync of {id} failed: {}", report.error.as_deref().unwrap_or_default());
    }
    Ok(report)
}

fn show(report: &SyncReport) {
    let s = &report.stats;
    match report.mode {
        crate::config::Mode::Diff => outln!(
            "   run {}: read {} rows, {} desired, destination had {} -> created {}, updated {}, deleted {}, unchanged {}",
            report.run,
            s.read,
            s.desired,
            s.destination,
            s.created,
            s.updated,
            s.deleted,
            s.unchanged
        ),
        crate::config::Mode::Event => outln!(
            "   run {}: {} events in {} batch(es), cursor {} -> {} -> upserted {}, deleted {}",
            report.run,
            s.read,
            s.batches,
            s.cursor_before.as_deref().unwrap_or("(start)"),
            s.cursor_after.as_deref().unwrap_or("-"),
            s.upserted,
            s.deleted
        ),
        crate::config::Mode::Reconcile => {
            let drift = s.drift.clone().unwrap_or_default();
            outln!(
                "   run {}: drift {} missing, {} extra, {} different -> repaired {}, left to the stream {}",
                report.run,
                drift.missing,
                drift.extra,
                drift.different,
                drift.repaired,
                drift.left_to_stream
            )
        }
    }
}

/// The destination's records, read from its files, as a small table.
fn table(dir: &Path) -> anyhow::Result<String> {
    let mut out = String::new();
    for (key, record) in crate::bundled::file_records::read(dir)? {
        let f = &record["fields"];
        let text = |name: &str| f[name].as_str().unwrap_or("").to_string();
        let mut extra = String::new();
        if let Some(homeroom) = f.get("homeroom") {
            write!(extra, "  homeroom={}", homeroom.as_str().unwrap_or_default())?;
        }
        writeln!(
            out,
            "   {:<5} {:<20} grade {:<3} {:<18} {}{extra}",
            key,
            format!("{} {}", text("given_name"), text("family_name")),
            text("grade"),
            text("username"),
            text("email")
        )?;
    }
    Ok(out)
}

/// Edits a destination record by hand, as an LMS admin would.
fn add_manual_field(dir: &Path, key: &str, field: &str, value: &str) -> anyhow::Result<()> {
    if !crate::bundled::file_records::edit(dir, key, |fields| fields[field] = value.into())? {
        anyhow::bail!("no record `{key}` in `{}`", dir.display());
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
