//! Syncs through the `sql` host interface against the real PostgreSQL and
//! MariaDB servers on this machine (each test makes its own tables, with
//! names no other test uses, and drops them): a diff sync PostgreSQL →
//! MariaDB of 100,000 rows with changes and deletes, then one that changes
//! nothing; hand edits in columns the sync does not own surviving; an event
//! sync by a cursor column; grants enforced; database errors mapped onto the
//! WIT error variant. A server that cannot be reached fails the test.

mod common;

use common::HostDir;
use common::databases::{MARIADB_URL, MariaDb, POSTGRES_URL, Postgres, unique_name};
use synchost::bundled::{SQL_DESTINATION, SQL_SOURCE};

/// A tenant with both databases as connections and the SQL plugins:
/// `source_config` and `destination_config` are inline TOML tables, and each
/// plugin is granted the connections listed.
fn tenant(
    (source_grants, source_config): (&str, &str),
    (destination_grants, destination_config): (&str, &str),
    pipeline: &str,
) -> String {
    format!(
        r#"[connections.pg]
url = "{POSTGRES_URL}"
statement_timeout = "60s"

[connections.maria]
url = "{MARIADB_URL}"

[plugins.src]
path = "{src}"
sha256 = "{src_digest}"
connections = [{source_grants}]
config = {source_config}

[plugins.dst]
path = "{dst}"
sha256 = "{dst_digest}"
connections = [{destination_grants}]
config = {destination_config}

[pipelines.main]
source = "src"
destination = "dst"
{pipeline}
"#,
        src = SQL_SOURCE.file_name,
        src_digest = common::sha256(SQL_SOURCE.bytes),
        dst = SQL_DESTINATION.file_name,
        dst_digest = common::sha256(SQL_DESTINATION.bytes),
    )
}

/// A PostgreSQL table of `rows` people, keyed by `id`.
fn people_in_postgres(pg: &Postgres, table: &str, rows: u64) {
    pg.run(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL, email text, score numeric(10,2), \
         active boolean NOT NULL, updated_at timestamp NOT NULL, seq bigint NOT NULL);
         INSERT INTO {table} SELECT g, 'name-' || g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'user' || g || '@example.com' END,
           (g % 1000) / 4.0, g % 3 = 0, timestamp '2024-01-01' + g * interval '1 second', g
         FROM generate_series(1, {rows}) g;"
    ));
}

/// The MariaDB table people are synced into, with a `notes` column the sync
/// does not own.
fn people_in_mariadb(maria: &mut MariaDb, table: &str) {
    maria.run(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(100), \
         score DECIMAL(10,2), active BOOLEAN NOT NULL, updated_at DATETIME NOT NULL, notes TEXT)"
    ));
}

/// Row count and a digest of every owned column, in key order, as each
/// database prints them: equal exactly when the tables hold the same people.
fn postgres_digest(pg: &Postgres, table: &str) -> (String, String) {
    let row = pg.rows(&format!(
        "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', id, name, email, score, active::int, \
         to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS')), ',' ORDER BY id), '')) FROM {table}"
    ));
    (row[0][0].clone().unwrap(), row[0][1].clone().unwrap())
}

fn mariadb_digest(maria: &mut MariaDb, table: &str) -> (String, String) {
    let row = maria.rows(&format!(
        "SELECT count(*), md5(coalesce(group_concat(concat_ws('|', id, name, email, score, active, \
         date_format(updated_at, '%Y-%m-%d %H:%i:%s')) ORDER BY id SEPARATOR ','), '')) FROM {table}"
    ));
    (row[0][0].clone().unwrap(), row[0][1].clone().unwrap())
}

/// The SQL source's config for PostgreSQL table `table` read as events by
/// its `seq` column: `columns`, a TOML list.
fn seq_cursor_source(table: &str, columns: &str) -> String {
    format!(r#"{{ connection = "pg", table = "{table}", key = "id", cursor = "seq", columns = {columns} }}"#)
}

const OWNED: &str = r#"["id", "name", "email", "score", "active", "updated_at"]"#;

/// 1,000 people in PostgreSQL table `source`, and an event pipeline
/// `acme/main` (by their `seq` column, `more` in its table) that has loaded
/// them into MariaDB table `destination`.
fn loaded_event_pipeline(
    pg: &Postgres,
    maria: &mut MariaDb,
    (source, destination): (&str, &str),
    more: &str,
) -> HostDir {
    people_in_postgres(pg, source, 1000);
    people_in_mariadb(maria, destination);
    let host = HostDir::new();
    host.write(
        "tenants/acme.toml",
        &tenant(
            ("\"pg\"", &seq_cursor_source(source, OWNED)),
            ("\"maria\"", &format!(r#"{{ connection = "maria", table = "{destination}", key = "id" }}"#)),
            &format!("mode = \"event\"\nmax_batch = 300\nlanes = 2\n{more}"),
        ),
    );
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["stats"]["upserted"], 1000, "{report}");
    host
}

#[test]
fn postgres_to_mariadb_diff_sync_of_100k_rows_with_changes_and_deletes_then_nothing_to_do() {
    let (pg, mut maria) = (Postgres::connect(), MariaDb::connect());
    let (source, destination) = (unique_name("people_src"), unique_name("people_dst"));
    people_in_postgres(&pg, &source, 100_000);
    people_in_mariadb(&mut maria, &destination);
    let host = HostDir::new();
    host.write(
        "tenants/acme.toml",
        &tenant(
            ("\"pg\"", &format!(r#"{{ connection = "pg", table = "{source}", key = "id", columns = {OWNED} }}"#)),
            ("\"maria\"", &format!(r#"{{ connection = "maria", table = "{destination}", key = "id" }}"#)),
            "mode = \"diff\"\napply_batch = 2000",
        ),
    );

    // The initial load.
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["stats"]["created"], 100_000, "{report}");
    assert_eq!(mariadb_digest(&mut maria, &destination), postgres_digest(&pg, &source));

    // Hand edits in the destination: a column the sync does not own, and one it owns.
    maria.run(&format!("UPDATE {destination} SET notes = 'called back' WHERE id <= 100"));
    maria.run(&format!("UPDATE {destination} SET email = 'typo@example.com' WHERE id = 2"));
    // Changes at the source: 1,000 renamed, 500 deleted, 500 new.
    pg.run(&format!(
        "UPDATE {source} SET name = name || ' (renamed)', seq = seq + 1000000 WHERE id % 100 = 1;
         DELETE FROM {source} WHERE id > 99000 AND id <= 99500;
         INSERT INTO {source} SELECT g, 'new-' || g, NULL, 1.5, true, timestamp '2025-06-01 12:00:00', g
         FROM generate_series(100001, 100500) g;"
    ));

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    let stats = &report["stats"];
    assert_eq!((&stats["created"], &stats["deleted"]), (&500.into(), &500.into()), "{report}");
    // The renames (less the five deleted since), and the owned column
    // edited by hand, set back.
    assert_eq!(stats["updated"], 996, "{report}");
    assert_eq!(mariadb_digest(&mut maria, &destination), postgres_digest(&pg, &source));
    assert_eq!(maria.value(&format!("SELECT count(*) FROM {destination} WHERE notes = 'called back'")).unwrap(), "100");
    assert_eq!(
        maria.value(&format!("SELECT notes FROM {destination} WHERE id = 1")).as_deref(),
        Some("called back"),
        "the hand edit of a renamed row survives its update"
    );

    // Nothing changed since: nothing to do.
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    common::assert_nothing_changed(&report, 100_000);

    pg.run(&format!("DROP TABLE {source}"));
    maria.run(&format!("DROP TABLE {destination}"));
}

#[test]
fn postgres_to_mariadb_event_sync_follows_a_cursor_column_and_keeps_hand_edits_of_untouched_rows() {
    let (pg, mut maria) = (Postgres::connect(), MariaDb::connect());
    let (source, destination) = (unique_name("events_src"), unique_name("events_dst"));
    let host = loaded_event_pipeline(&pg, &mut maria, (&source, &destination), "");
    assert_eq!(mariadb_digest(&mut maria, &destination), postgres_digest(&pg, &source));

    // Hand edits; then changes to other rows, which bump their cursor.
    maria.run(&format!("UPDATE {destination} SET notes = 'hand edit', name = 'edited' WHERE id IN (5, 6)"));
    pg.run(&format!("UPDATE {source} SET name = 'changed', seq = 5000 + id WHERE id IN (6, 7)"));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["stats"]["upserted"], 2, "only the changed rows are read again: {report}");
    let rows = maria.rows(&format!("SELECT id, name, notes FROM {destination} WHERE id IN (5, 6, 7) ORDER BY id"));
    let row = |id: &str, name: &str, notes: Option<&str>| {
        vec![Some(id.to_string()), Some(name.to_string()), notes.map(str::to_string)]
    };
    assert_eq!(
        rows,
        vec![
            // Untouched since: the hand edit stays whole.
            row("5", "edited", Some("hand edit")),
            // Changed: the event's fields win, the unowned column stays.
            row("6", "changed", Some("hand edit")),
            row("7", "changed", None),
        ]
    );

    pg.run(&format!("DROP TABLE {source}"));
    maria.run(&format!("DROP TABLE {destination}"));
}

/// Rows changed behind the stream's back (updates that leave the cursor
/// column alone, deletes, hand edits in MariaDB) are found and repaired by a
/// reconciliation, exactly those, while a writer keeps producing events;
/// keys with events in flight are left to the stream.
#[test]
fn postgres_to_mariadb_reconciliation_repairs_what_bypassed_the_cursor_while_events_flow() {
    let (pg, mut maria) = (Postgres::connect(), MariaDb::connect());
    let (source, destination) = (unique_name("drift_src"), unique_name("drift_dst"));
    let host = loaded_event_pipeline(&pg, &mut maria, (&source, &destination), "reconcile = \"0 3 * * *\"");
    pg.run(&format!("CREATE SEQUENCE {source}_seq START 1000000"));

    // The writer: people 500 to 999 renamed through the cursor column, one
    // every few milliseconds, until told to stop.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (writing, writes, source) = (writing.clone(), writes.clone(), source.clone());
        std::thread::spawn(move || {
            let pg = Postgres::connect();
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let n = writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let id = 500 + (n * 7919) % 500;
                pg.run(&format!(
                    "UPDATE {source} SET name = 'written {n}', seq = nextval('{source}_seq') WHERE id = {id}"
                ));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    // Behind the stream's back: renames that leave `seq` alone, deletes,
    // and hand edits of MariaDB; and two changes the stream does see.
    pg.run(&format!("UPDATE {source} SET name = 'quiet' WHERE id IN (10, 11, 12)"));
    pg.run(&format!("DELETE FROM {source} WHERE id IN (20, 21)"));
    maria.run(&format!("UPDATE {destination} SET email = 'hand@example.com' WHERE id IN (32, 33)"));
    maria.run(&format!("DELETE FROM {destination} WHERE id = 40"));
    pg.run(&format!("UPDATE {source} SET name = 'streamed', seq = nextval('{source}_seq') WHERE id IN (10, 45)"));
    let wait_for_writes = |more: u64| {
        let until = writes.load(std::sync::atomic::Ordering::Relaxed) + more;
        common::admin::wait_for("the writer", std::time::Duration::from_secs(60), || {
            writes.load(std::sync::atomic::Ordering::Relaxed) >= until
        });
    };
    wait_for_writes(20);

    let plan = host.json(&["reconcile", "acme/main", "--plan"]);
    let drift = &plan["drift"];
    let keys = |samples: &serde_json::Value| -> Vec<String> {
        samples
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap_or_else(|| k["key"].as_str().unwrap()).to_string())
            .collect()
    };
    assert_eq!(keys(&drift["samples"]["missing"]), ["40"], "{plan}");
    assert_eq!(keys(&drift["samples"]["extra"]), ["20", "21"], "{plan}");
    // Sorted by key, the writer's (500 and up) come after these.
    let different: Vec<String> = keys(&drift["samples"]["different"]);
    assert_eq!(different[..6], ["10", "11", "12", "32", "33", "45"], "{plan}");
    assert_eq!(drift["fields"]["email"], 2, "{plan}");
    let left = keys(&drift["samples"]["left_to_stream"]);
    assert!(left.contains(&"10".to_string()) && left.contains(&"45".to_string()), "{plan}");
    assert_eq!(maria.value(&format!("SELECT count(*) FROM {destination} WHERE id = 40")).unwrap(), "0");

    wait_for_writes(20);
    let output = host.synchost(&["reconcile", "acme/main", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(output.status.success(), "{report}");
    let stats = &report["stats"];
    // The writer's events since the last event run, and the two above.
    assert!(stats["drift"]["events_between"].as_u64().unwrap() > 20, "{report}");
    // Exactly the changes behind the stream's back: the writer's keys are
    // all in flight or in step.
    assert_eq!((stats["created"].as_u64(), stats["deleted"].as_u64()), (Some(1), Some(2)), "{report}");
    assert_eq!(stats["updated"], 4, "11, 12, 32 and 33: {report}");
    let names =
        maria.rows(&format!("SELECT id, name, email FROM {destination} WHERE id IN (10, 11, 32, 45) ORDER BY id"));
    assert_eq!(names[0][1].as_deref(), Some("name-10"), "10 is the stream's to bring: {names:?}");
    assert_eq!(names[1][1].as_deref(), Some("quiet"));
    assert_eq!(names[2][2].as_deref(), Some("user32@example.com"), "the hand edit is repaired");
    assert_eq!(names[3][1].as_deref(), Some("name-45"));
    assert_eq!(maria.value(&format!("SELECT count(*) FROM {destination} WHERE id IN (20, 21, 40)")).unwrap(), "1");

    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let written = writes.load(std::sync::atomic::Ordering::Relaxed);
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(mariadb_digest(&mut maria, &destination), postgres_digest(&pg, &source), "after {written} writes");
    let plan = host.json(&["reconcile", "acme/main", "--plan"]);
    let drift = &plan["drift"];
    assert_eq!([&drift["missing"], &drift["extra"], &drift["different"]], [&serde_json::json!(0); 3], "{plan}");

    pg.run(&format!("DROP TABLE {source}; DROP SEQUENCE {source}_seq"));
    maria.run(&format!("DROP TABLE {destination}"));
}

#[test]
fn postgres_connection_not_granted_to_the_plugin_is_a_config_error_naming_it() {
    let pg = Postgres::connect();
    let source = unique_name("grant_src");
    people_in_postgres(&pg, &source, 10);
    let host = HostDir::new();
    host.write(
        "tenants/acme.toml",
        &tenant(
            // The source names `pg` but is granted only `maria`.
            ("\"maria\"", &format!(r#"{{ connection = "pg", table = "{source}", key = "id" }}"#)),
            // A destination that works, so the source's error is the one.
            ("\"pg\"", &format!(r#"{{ connection = "pg", table = "{source}", key = "id" }}"#)),
            "mode = \"diff\"",
        ),
    );
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("config error"), "{error}");
    assert!(
        error.contains(
            "connection `pg` is not granted to plugin `src` of tenant `acme` (its `connections` grant: maria)"
        ),
        "{error}"
    );
    pg.run(&format!("DROP TABLE {source}"));
}

#[test]
fn a_grant_of_a_connection_the_tenant_lacks_fails_validation() {
    // No database is reached: the tenant file alone is wrong.
    let host = HostDir::new();
    host.write(
        "tenants/acme.toml",
        &tenant(
            ("\"pg\", \"crm\"", r#"{ connection = "pg", table = "t", key = "id" }"#),
            ("\"maria\"", r#"{ connection = "maria", table = "t", key = "id" }"#),
            "mode = \"diff\"",
        )
        .replace(&format!("url = \"{MARIADB_URL}\""), "url = \"mysql://root:secret@127.0.0.1:3306/test\""),
    );
    let output = host.synchost(&["validate"]);
    assert!(!output.status.success());
    let errors = common::stderr(&output);
    assert!(
        errors.contains("plugins.src.connections[1]: no connection named `crm` in this tenant (it has: maria, pg)"),
        "{errors}"
    );
    assert!(errors.contains("connections.maria.url: holds a password"), "{errors}");
}

#[test]
fn postgres_missing_table_is_a_config_error_naming_the_table() {
    let pg = Postgres::connect();
    let (missing, destination) = (unique_name("no_such_table"), unique_name("missing_dst"));
    pg.run(&format!("CREATE TABLE {destination} (id bigint PRIMARY KEY)"));
    let host = HostDir::new();
    host.write(
        "tenants/acme.toml",
        &tenant(
            ("\"pg\"", &format!(r#"{{ connection = "pg", table = "{missing}", key = "id" }}"#)),
            ("\"pg\"", &format!(r#"{{ connection = "pg", table = "{destination}", key = "id" }}"#)),
            "mode = \"diff\"",
        ),
    );
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("config error: connection `pg` (postgres)"), "{error}");
    assert!(error.contains(&format!("relation \"{missing}\" does not exist (SQLSTATE 42P01")), "{error}");
    pg.run(&format!("DROP TABLE {destination}"));
}

#[test]
fn mariadb_constraint_violation_rejects_that_row_with_the_databases_message_and_applies_the_rest() {
    let (pg, mut maria) = (Postgres::connect(), MariaDb::connect());
    let (source, destination) = (unique_name("check_src"), unique_name("check_dst"));
    people_in_postgres(&pg, &source, 50);
    people_in_mariadb(&mut maria, &destination);
    maria.run(&format!("ALTER TABLE {destination} ADD CONSTRAINT score_cap CHECK (score < 200)"));
    pg.run(&format!("UPDATE {source} SET score = 240 WHERE id = 7"));
    let host = HostDir::new();
    host.write(
        "tenants/acme.toml",
        &tenant(
            ("\"pg\"", &format!(r#"{{ connection = "pg", table = "{source}", key = "id", columns = {OWNED} }}"#)),
            ("\"maria\"", &format!(r#"{{ connection = "maria", table = "{destination}", key = "id" }}"#)),
            "mode = \"diff\"",
        ),
    );
    let (_, report) = host.sync("acme/main", &[]);
    assert_eq!(report["stats"]["created"], 49, "{report}");
    assert_eq!(report["stats"]["rejected"], 1, "{report}");
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    assert_eq!(failures[0][0], "7");
    let reason = failures[0][1].as_str().unwrap();
    assert!(reason.contains("rejected"), "{reason}");
    assert!(reason.contains("CONSTRAINT `score_cap` failed"), "the database's own message: {reason}");
    assert_eq!(maria.value(&format!("SELECT count(*) FROM {destination}")).unwrap(), "49");

    pg.run(&format!("DROP TABLE {source}"));
    maria.run(&format!("DROP TABLE {destination}"));
}

#[test]
fn postgres_unique_violation_rejects_that_row_with_the_databases_message() {
    let pg = Postgres::connect();
    let (source, destination) = (unique_name("unique_src"), unique_name("unique_dst"));
    people_in_postgres(&pg, &source, 20);
    pg.run(&format!(
        "CREATE TABLE {destination} (id bigint PRIMARY KEY, name text NOT NULL, email text UNIQUE, score numeric(10,2),
           active boolean NOT NULL, updated_at timestamp NOT NULL);
         UPDATE {source} SET email = 'user3@example.com' WHERE id = 4;"
    ));
    let host = HostDir::new();
    host.write(
        "tenants/acme.toml",
        &tenant(
            ("\"pg\"", &format!(r#"{{ connection = "pg", table = "{source}", key = "id", columns = {OWNED} }}"#)),
            ("\"pg\"", &format!(r#"{{ connection = "pg", table = "{destination}", key = "id" }}"#)),
            "mode = \"diff\"",
        ),
    );
    let (_, report) = host.sync("acme/main", &[]);
    assert_eq!(report["stats"]["created"], 19, "{report}");
    assert_eq!(report["stats"]["rejected"], 1, "{report}");
    let reason = report["failures"][0][1].as_str().unwrap();
    assert!(reason.contains("rejected"), "{reason}");
    assert!(reason.contains("duplicate key value violates unique constraint"), "{reason}");
    assert!(reason.contains("SQLSTATE 23505"), "{reason}");
    pg.run(&format!("DROP TABLE {source}; DROP TABLE {destination}"));
}

#[test]
fn a_runtime_that_ends_closes_its_database_connections() {
    let pg = Postgres::connect();
    let (source, destination) = (unique_name("close_src"), unique_name("close_dst"));
    people_in_postgres(&pg, &source, 10);
    pg.run(&format!("CREATE TABLE {destination} (LIKE {source} INCLUDING ALL)"));
    // The pool's sessions carry a name of their own, so that other tests'
    // sessions are not counted.
    let application = unique_name("synchost_close");
    let host = HostDir::new();
    let tenant = tenant(
        ("\"pg\"", &format!(r#"{{ connection = "pg", table = "{source}", key = "id" }}"#)),
        ("\"pg\"", &format!(r#"{{ connection = "pg", table = "{destination}", key = "id" }}"#)),
        "mode = \"diff\"",
    )
    .replace(&format!("url = \"{POSTGRES_URL}\""), &format!("url = \"{POSTGRES_URL}?application_name={application}\""));
    host.write("tenants/acme.toml", &tenant);
    let sessions = || -> u64 {
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application}'");
        pg.rows(&sql)[0][0].as_deref().unwrap().parse().unwrap()
    };

    let runtime = synchost::Runtime::load(&host.path("synchost.toml"), synchost::Tenants::All).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let id = synchost::PipelineId::new("acme", "main");
    let report = runtime.job(&id, &stop, synchost::SyncOptions::default()).unwrap().run().unwrap();
    assert_eq!(report.stats.created, 10, "{:?}", report.error);
    assert!(sessions() >= 1, "the pool keeps its sessions between runs");

    drop(runtime);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sessions() > 0 {
        assert!(std::time::Instant::now() < deadline, "{} sessions still open after the runtime ended", sessions());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    pg.run(&format!("DROP TABLE {source}; DROP TABLE {destination}"));
}

/// Runs `synchost plugin test` of `wasm` (written into a scratch directory
/// with `config` and `grants`) and returns its report, asserting it exits 0.
fn plugin_test(wasm: &[u8], config: serde_json::Value, grants: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("plugin.wasm"), wasm).unwrap();
    std::fs::write(d.join("grants.toml"), grants).unwrap();
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    common::plugin_test_passes(d, &["plugin.wasm", "--plugin-config", "config.json", "--grants", "grants.toml"])
}

#[test]
fn plugin_test_passes_the_sql_destination_against_postgres_and_mariadb() {
    let pg = Postgres::connect();
    let table = unique_name("plugin_test_dst");
    pg.run(&format!("CREATE TABLE {table} (id text PRIMARY KEY, name text, note text)"));
    let config = serde_json::json!({"connection": "db", "table": table, "key": "id"});
    let report = plugin_test(SQL_DESTINATION.bytes, config, &format!("[connections.db]\nurl = \"{POSTGRES_URL}\"\n"));
    assert!(report.contains("7 passed, 0 failed, 0 skipped"), "{report}");
    assert!(report.contains("the update of a missing record was rejected"), "{report}");
    // The checks leave the table as they found it.
    assert_eq!(pg.value(&format!("SELECT count(*) FROM {table}")).as_deref(), Some("0"));
    pg.run(&format!("DROP TABLE {table}"));

    let mut maria = MariaDb::connect();
    let table = unique_name("plugin_test_dst");
    maria.run(&format!("CREATE TABLE {table} (id varchar(100) PRIMARY KEY, name text, note text)"));
    let config = serde_json::json!({"connection": "db", "table": table, "key": "id"});
    let report = plugin_test(SQL_DESTINATION.bytes, config, &format!("[connections.db]\nurl = \"{MARIADB_URL}\"\n"));
    assert!(report.contains("7 passed, 0 failed, 0 skipped"), "{report}");
    assert_eq!(maria.value(&format!("SELECT count(*) FROM {table}")).as_deref(), Some("0"));
    maria.run(&format!("DROP TABLE {table}"));
}

#[test]
fn plugin_test_passes_the_sql_source_against_postgres_with_grants_from_a_file() {
    let pg = Postgres::connect();
    let table = unique_name("plugin_test_src");
    people_in_postgres(&pg, &table, 40);
    let config = serde_json::json!({"connection": "pg", "table": table, "key": "id", "cursor": "seq", "page_size": 15});
    let report = plugin_test(SQL_SOURCE.bytes, config, &format!("[connections.pg]\nurl = \"{POSTGRES_URL}\"\n"));
    assert!(report.contains("40 row(s) in 3 page(s)") && report.contains("5 passed, 0 failed, 0 skipped"), "{report}");

    // A grants file is checked as a tenant file's tables are, at its lines.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("sql_source.wasm"), SQL_SOURCE.bytes).unwrap();
    std::fs::write(d.join("grants.toml"), "[connections.pg]\nurl = \"postgress://nowhere\"\n").unwrap();
    let output = common::plugin(d, &["run", "sql_source.wasm", "--grants", "grants.toml", "info"]);
    assert!(common::stderr(&output).contains("grants.toml:2:7: connections.pg.url"), "{}", common::stderr(&output));
}

#[test]
fn a_snapshot_leaves_out_rows_its_deleted_column_marks_and_the_marker_itself() {
    let pg = Postgres::connect();
    let table = unique_name("soft_deleted");
    people_in_postgres(&pg, &table, 10);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("sql_source.wasm"), SQL_SOURCE.bytes).unwrap();
    std::fs::write(d.join("grants.toml"), format!("[connections.pg]\nurl = \"{POSTGRES_URL}\"\n")).unwrap();
    // `active` is true for every third person: here it marks them deleted.
    // It is not among the columns asked for, so it is read only to filter by.
    let config = serde_json::json!({
        "connection": "pg", "table": table, "key": "id", "columns": ["id", "name"], "deleted": "active", "page_size": 4
    });
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    let output = common::plugin(
        d,
        &["run", "sql_source.wasm", "--plugin-config", "config.json", "--grants", "grants.toml", "--json", "snapshot"],
    );
    assert!(output.status.success(), "{}", common::stderr(&output));
    let rows: Vec<serde_json::Value> =
        common::stdout(&output).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let keys: Vec<&str> = rows.iter().map(|row| row["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["1", "2", "4", "5", "7", "8", "10"]);
    assert_eq!(rows[2]["fields"]["name"], "name-4");
    assert!(rows.iter().all(|row| row["fields"].get("active").is_none()), "{rows:?}");
    // Three pages of four rows were read, less the deleted ones.
    assert!(common::stderr(&output).contains("7 row(s) in 3 page(s)"), "{}", common::stderr(&output));
    pg.run(&format!("DROP TABLE {table}"));
}

/// A destination database, PostgreSQL or MariaDB, for tests that run on both.
enum Destination {
    Postgres(Postgres),
    MariaDb(MariaDb),
}

impl Destination {
    fn run(&mut self, sql: &str) {
        match self {
            Destination::Postgres(pg) => pg.run(sql),
            Destination::MariaDb(maria) => maria.run(sql),
        }
    }

    fn rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Destination::Postgres(pg) => pg.rows(sql),
            Destination::MariaDb(maria) => maria.rows(sql),
        }
    }

    fn connection(&self) -> &'static str {
        match self {
            Destination::Postgres(_) => "pg",
            Destination::MariaDb(_) => "maria",
        }
    }
}

/// With `fence_table`, a batch under an older lease of its pipeline than the
/// one the table records (a host that stalled and lost its lease) is refused
/// whole, and leaves the table as it was; a batch under the newest lease
/// goes through. The newer holder is played by raising the recorded token by
/// hand.
fn a_batch_under_an_older_lease_than_the_fence_table_records_is_refused(mut destination: Destination) {
    let pg = Postgres::connect();
    let (source, table, fences) = (unique_name("fenced_src"), unique_name("fenced_dst"), unique_name("fences"));
    people_in_postgres(&pg, &source, 100);
    destination.run(&format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL)"));
    let connection = destination.connection();
    let host = HostDir::new();
    host.write(
        "tenants/acme.toml",
        &tenant(
            ("\"pg\"", &seq_cursor_source(&source, r#"["id", "name"]"#)),
            (
                &format!("\"{connection}\""),
                &format!(
                    r#"{{ connection = "{connection}", table = "{table}", key = "id", fence_table = "{fences}" }}"#
                ),
            ),
            "mode = \"event\"\nmax_batch = 50\nlanes = 2",
        ),
    );
    let names = |destination: &mut Destination| {
        destination.rows(&format!("SELECT count(*), count(CASE WHEN name = 'changed' THEN 1 END) FROM {table}"))
    };
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(names(&mut destination), [[Some("100".into()), Some("0".into())]]);
    // One scope, the state's and the pipeline's, at the run's token.
    let recorded = destination.rows(&format!("SELECT scope, token FROM {fences}"));
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(recorded[0][0].as_deref().unwrap().ends_with("/acme/main"), "{recorded:?}");

    // A newer holder has written: every batch of this host's next run is
    // refused, naming both tokens, and nothing of it lands.
    destination.run(&format!("UPDATE {fences} SET token = token + 1000"));
    pg.run(&format!("UPDATE {source} SET name = 'changed', seq = 5000 + id WHERE id <= 60"));
    // (Refused as transient: the operations wait in the retry queue.)
    let (_, report) = host.sync("acme/main", &[]);
    assert_eq!(report["stats"]["upserted"], 0, "a run under an older lease went through: {report}");
    assert_eq!(report["stats"]["pending_retries"], 60, "{report}");
    assert!(report["failures"][0][1].as_str().unwrap().contains("has passed to another holder"), "{report}");
    assert_eq!(names(&mut destination), [[Some("100".into()), Some("0".into())]]);

    // Under the newest lease again (the recorded one put back below this
    // host's next), the refused operations go through, as their retries
    // come due.
    destination.run(&format!("UPDATE {fences} SET token = 0"));
    common::admin::wait_for("the refused changes to apply", std::time::Duration::from_secs(120), || {
        host.sync("acme/main", &[]);
        names(&mut destination) == [[Some("100".into()), Some("60".into())]]
    });

    pg.run(&format!("DROP TABLE {source}"));
    destination.run(&format!("DROP TABLE {table}"));
    destination.run(&format!("DROP TABLE {fences}"));
}

#[test]
fn postgres_fence_table_refuses_a_batch_under_an_older_lease() {
    a_batch_under_an_older_lease_than_the_fence_table_records_is_refused(Destination::Postgres(Postgres::connect()));
}

#[test]
fn mariadb_fence_table_refuses_a_batch_under_an_older_lease() {
    a_batch_under_an_older_lease_than_the_fence_table_records_is_refused(Destination::MariaDb(MariaDb::connect()));
}
