//! A PostgreSQL → PostgreSQL diff sync of a 1,000,000-row table through the
//! wasm `sql-source` and `sql-destination` plugins and the `sql` host
//! interface, against the PostgreSQL server on this machine, with `psql
//! \copy` of the same table (out of the source, into an empty table of the
//! same shape, piped) as the baseline measured in the same run.
//!
//! Each repeat measures, with the `synchost` binary:
//! - `copy`: `psql -c "\copy SRC TO STDOUT" | psql -c "\copy COPY FROM STDIN"`;
//! - `load`: a diff sync into the emptied destination (every row created);
//! - `idle`: a second diff sync, which reads and compares both tables and
//!   writes nothing;
//! - `change`: after 1% of the source rows changed (one `UPDATE`), `synchost
//!   plan` and then the diff sync that applies those updates: the ratio of
//!   the sync to the plan is what applying adds to reading.
//!
//! Medians are reported, as rows/s and as ratios against `copy` (and the
//! change sync against its plan).
//!
//! Run: `cargo bench -p synchost --bench sql_diff` (`-- --rows N --repeat N`).

use std::process::Command;
use std::time::Instant;

mod common;
use common::{digest, median, prepare_host_dir};

const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

struct Args {
    rows: u64,
    repeat: usize,
}

fn args() -> Args {
    let mut args = Args { rows: 1_000_000, repeat: 3 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value =
            || it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--rows" => args.rows = value(),
            "--repeat" => args.repeat = value() as usize,
            // What the cargo bench harness passes along.
            "--bench" => {}
            other => panic!("unknown argument `{other}`: use --rows N and --repeat N"),
        }
    }
    args
}

/// Runs SQL through `psql`, failing loudly if the server is not there.
fn psql(sql: &str) {
    let output = Command::new("psql")
        .args([POSTGRES_URL, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("this benchmark needs the `psql` client");
    assert!(
        output.status.success(),
        "psql failed (is PostgreSQL running at {POSTGRES_URL}?): {sql}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `synchost COMMAND acme/load --json` (`sync` or `plan`): its seconds and report.
fn synchost(config: &std::path::Path, command: &str) -> (f64, serde_json::Value) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_synchost"))
        .arg("--config")
        .arg(config)
        .args([command, "acme/load", "--json"])
        .env("SYNCHOST_LOG", "warn")
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success(), "the {command} failed: {report}");
    (seconds, report)
}

fn sync(config: &std::path::Path) -> (f64, serde_json::Value) {
    synchost(config, "sync")
}

fn main() {
    let args = args();
    let suffix = format!("{}", std::process::id());
    let (source, destination, copy) =
        (format!("bench_src_{suffix}"), format!("bench_dst_{suffix}"), format!("bench_copy_{suffix}"));
    let shape = "(id bigint PRIMARY KEY, name text NOT NULL, email text, score numeric(10,2), active boolean NOT NULL, \
                 updated_at timestamp NOT NULL)";
    psql(&format!(
        "CREATE TABLE {source} {shape}; CREATE TABLE {destination} {shape}; CREATE TABLE {copy} {shape};
         INSERT INTO {source} SELECT g, 'name-' || g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'user' || g || '@example.com' END,
           (g % 100000) / 4.0, g % 3 = 0, timestamp '2024-01-01' + g * interval '1 second'
         FROM generate_series(1, {}) g;
         ANALYZE {source};",
        args.rows
    ));

    let dir = tempfile::tempdir().unwrap();
    prepare_host_dir(dir.path(), &["tenants"]).unwrap();
    let config = dir.path().join("synchost.toml");
    std::fs::write(&config, "state_dir = \"state\"\n").unwrap();
    std::fs::write(
        dir.path().join("tenants/acme.toml"),
        format!(
            r#"[connections.pg]
url = "{POSTGRES_URL}"
statement_timeout = "5m"

[plugins.src]
path = "sql_source.wasm"
sha256 = "{src}"
connections = ["pg"]
config = {{ connection = "pg", table = "{source}", key = "id", page_size = 10000 }}

[plugins.dst]
path = "sql_destination.wasm"
sha256 = "{dst}"
connections = ["pg"]
config = {{ connection = "pg", table = "{destination}", key = "id", page_size = 10000, statement_rows = 1000 }}

[pipelines.load]
mode = "diff"
source = "src"
destination = "dst"
apply_batch = 5000
"#,
            src = digest(synchost::bundled::SQL_SOURCE.bytes),
            dst = digest(synchost::bundled::SQL_DESTINATION.bytes),
        ),
    )
    .unwrap();

    println!("PostgreSQL → PostgreSQL diff sync, {} rows of 6 columns, median of {}", args.rows, args.repeat);
    let (mut copies, mut loads, mut idles) = (Vec::new(), Vec::new(), Vec::new());
    let (mut plans, mut changes, mut change_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.repeat {
        psql(&format!("TRUNCATE {copy}; TRUNCATE {destination}"));
        let started = Instant::now();
        let piped = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -eo pipefail; psql {POSTGRES_URL} -q -c '\\copy {source} TO STDOUT' | \
                 psql {POSTGRES_URL} -q -v ON_ERROR_STOP=1 -c '\\copy {copy} FROM STDIN'"
            ))
            .status()
            .unwrap();
        assert!(piped.success(), "psql \\copy failed");
        copies.push(started.elapsed().as_secs_f64());

        let (seconds, report) = sync(&config);
        assert_eq!(report["stats"]["created"], args.rows, "{report}");
        loads.push(seconds);
        let (seconds, report) = sync(&config);
        assert_eq!(report["stats"]["unchanged"], args.rows, "{report}");
        idles.push(seconds);

        psql(&format!("UPDATE {source} SET score = score + 1 WHERE id % 100 = 0"));
        let (plan, report) = synchost(&config, "plan");
        assert_eq!(report["counts"]["update"], args.rows / 100, "{report}");
        let (seconds, report) = sync(&config);
        assert_eq!(report["stats"]["updated"], args.rows / 100, "{report}");
        plans.push(plan);
        changes.push(seconds);
        change_ratios.push(seconds / plan);
    }
    let (copy_s, load_s, idle_s) = (median(copies), median(loads), median(idles));
    let rate = |seconds: f64| args.rows as f64 / seconds;
    println!("| variant | seconds | rows/s | vs psql \\copy |");
    println!("|---|---|---|---|");
    println!("| psql \\copy, out piped into in (baseline) | {copy_s:.2} | {:.0} | 1.00x |", rate(copy_s));
    println!("| synchost diff sync, initial load | {load_s:.2} | {:.0} | {:.2}x |", rate(load_s), load_s / copy_s);
    println!("| synchost diff sync, nothing changed | {idle_s:.2} | {:.0} | {:.2}x |", rate(idle_s), idle_s / copy_s);
    let (plan_s, change_s) = (median(plans), median(changes));
    println!(
        "1% changed ({} updates): plan {plan_s:.2} s, sync {change_s:.2} s, sync / plan {:.2}x",
        args.rows / 100,
        median(change_ratios)
    );

    psql(&format!("DROP TABLE {source}; DROP TABLE {destination}; DROP TABLE {copy}"));
}
