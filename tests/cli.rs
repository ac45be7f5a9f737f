//! The command line itself: help, plugin inspection and signing, the demo, and
//! how it behaves at its edges (closed pipes, Ctrl-C, JSON errors, exit codes).

mod common;

use std::process::Command;

use common::{BIN, HostDir, stderr, stdout};

#[test]
fn help_lists_every_command() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = stdout(&output);
    for command in ["validate", "plugin", "sync", "run", "runs", "demo"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(command)), "`{command}` missing from:\n{help}");
    }
}

#[test]
fn plugin_inspect_describes_every_bundled_plugin() {
    let expected = [
        ("file_source.wasm", "source", "file-source"),
        ("file_destination.wasm", "destination", "file-destination"),
        ("field_mapper.wasm", "transform", "field-mapper"),
    ];
    for (file, kind, name) in expected {
        let path = std::path::Path::new(synchost::bundled::PLUGIN_DIR).join(file);
        let output = Command::new(BIN).args(["plugin", "inspect", "--json"]).arg(&path).output().unwrap();
        assert!(output.status.success(), "{file}: {}", stderr(&output));
        let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(info["kind"], kind, "{info}");
        assert_eq!(info["world"], format!("synchost:plugin/{kind}-plugin"));
        assert_eq!(info["wit_version"], "0.2.3");
        assert_eq!(info["info"]["name"], name);
        assert_eq!(info["info"]["wit_version"], "0.2.3");
        assert_eq!(info["sha256"], common::sha256(&std::fs::read(&path).unwrap()));
    }
}

#[test]
fn every_bundled_plugin_declares_its_whole_config() {
    // What `validate` checks tenant files against: an object schema that
    // refuses unknown keys, and describes each key it takes.
    for plugin in synchost::bundled::ALL {
        let path = std::path::Path::new(synchost::bundled::PLUGIN_DIR).join(plugin.file_name);
        let output = Command::new(BIN).args(["plugin", "inspect", "--json"]).arg(&path).output().unwrap();
        assert!(output.status.success(), "{}: {}", plugin.file_name, stderr(&output));
        let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let schema = &info["config_schema"];
        assert_eq!(schema["type"], "object", "{}: {schema}", plugin.file_name);
        assert_eq!(schema["additionalProperties"], false, "{}: {schema}", plugin.file_name);
        let properties = schema["properties"].as_object().unwrap_or_else(|| panic!("{}: {schema}", plugin.file_name));
        assert!(!properties.is_empty(), "{}: {schema}", plugin.file_name);
        for (key, property) in properties {
            assert!(
                property["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{}: key `{key}` has no description: {property}",
                plugin.file_name
            );
        }
    }
    // The text form lists the keys, with what is required and the defaults.
    let path = std::path::Path::new(synchost::bundled::PLUGIN_DIR).join("file_destination.wasm");
    let output = Command::new(BIN).args(["plugin", "inspect"]).arg(&path).output().unwrap();
    let text = stdout(&output);
    assert!(text.lines().any(|l| l.contains("dir") && l.contains("string (required)")), "{text}");
    assert!(text.lines().any(|l| l.contains("shards") && l.contains("(default 16)")), "{text}");
}

#[test]
fn plugin_inspect_explains_what_is_not_a_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let output = Command::new(BIN).args(["plugin", "inspect"]).arg(&core).output().unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("plugin `core` is not a WebAssembly component: it is a core WebAssembly module"),
        "{}",
        stderr(&output)
    );

    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, b"hello, world").unwrap();
    let output = Command::new(BIN).args(["plugin", "inspect"]).arg(&text).output().unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("does not start with the WebAssembly header"), "{}", stderr(&output));
}

#[test]
fn sync_names_an_unknown_pipeline() {
    let host = common::HostDir::new();
    host.write(
        "tenants/acme.toml",
        &common::file_pipeline_tenant(
            r#"{ snapshot = "/in/p.csv", key = "id" }"#,
            r#"[{ name = "id", from = "id" }]"#,
            "mode = \"diff\"",
        ),
    );
    let output = host.synchost(&["sync", "acme/nope"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("tenant `acme` has no pipeline `nope` (it has: main)"), "{}", stderr(&output));
    let output = host.synchost(&["sync", "globex/main"]);
    let error = stderr(&output);
    assert!(error.contains("no tenant `globex`: no file `globex.toml` here (tenants: acme)"), "{error}");
    // A message without a key has no empty place for one.
    assert!(!error.contains(": :"), "{error}");
}

#[test]
fn the_demo_shows_a_diff_sync_and_an_event_sync_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let output = Command::new(BIN).args(["demo", "--dir"]).arg(&demo).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("created 5, updated 0, deleted 0, unchanged 0"), "{text}");
    assert!(text.contains("BLOCKED, nothing written") && text.contains("synchost approve 2"), "{text}");
    assert!(text.contains("created 1, updated 1, deleted 1, unchanged 3"), "{text}");
    assert!(text.contains("created 0, updated 0, deleted 0, unchanged 5"), "{text}");
    assert!(text.contains("mgarcialopez1004") && text.contains("homeroom=B12"), "{text}");
    assert!(text.contains("3 events in 1 batch(es)") && text.contains("2 events in 1 batch(es)"), "{text}");

    // What it built is a working host directory, and the commands it prints
    // run as printed (the binary by its full path).
    let validate = text.lines().find(|l| l.trim_end().ends_with(" validate")).expect("a validate command");
    let words: Vec<&str> = validate.split_whitespace().collect();
    let output = Command::new(words[0]).args(&words[1..]).output().unwrap();
    assert!(output.status.success(), "`{validate}`: {}", stderr(&output));
    let live = common::read_records(&demo.join("data/lms-live"));
    assert_eq!(live.keys().collect::<Vec<_>>(), ["2001", "2003"]);
    assert_eq!(live["2001"]["grade"], "10");

    // It refuses to overwrite a directory that is in use.
    let again = Command::new(BIN).args(["demo", "--dir"]).arg(&demo).output().unwrap();
    assert!(!again.status.success());
    assert!(stderr(&again).contains("is not empty"), "{}", stderr(&again));
}

#[test]
fn plugin_sign_and_verify_catch_a_changed_file_and_an_untrusted_key() {
    let host = HostDir::new();
    let key = host.path("publisher.key");
    let keygen = host.synchost(&["plugin", "keygen", key.to_str().unwrap()]);
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let public = stdout(&keygen).trim().to_string();
    assert!(public.starts_with("ed25519:"), "{public}");
    // The secret key is readable by its owner only, and never overwritten.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!host.synchost(&["plugin", "keygen", key.to_str().unwrap()]).status.success());

    let plugin = host.path("plugins/field_mapper.wasm");
    let plugin = plugin.to_str().unwrap();
    let sign = host.synchost(&["plugin", "sign", plugin, "--key", key.to_str().unwrap()]);
    assert!(sign.status.success(), "{}", stderr(&sign));

    let verify = host.synchost(&["plugin", "verify", plugin, "--key", &public]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    assert!(stdout(&verify).contains(&format!("good signature by {public}")), "{}", stdout(&verify));

    // Trusted through synchost.toml instead of --key.
    host.write("synchost.toml", &common::host_config(&format!("trusted_keys = [\"{public}\"]\n")));
    assert!(host.synchost(&["plugin", "verify", plugin]).status.success());

    // Another publisher's key is not trusted.
    let other = host.synchost(&["plugin", "keygen", host.path("other.key").to_str().unwrap()]);
    let verify = host.synchost(&["plugin", "verify", plugin, "--key", stdout(&other).trim()]);
    assert!(!verify.status.success());
    assert!(stderr(&verify).contains("not among the host's trusted_keys"), "{}", stderr(&verify));

    // One byte changed after signing: the signature no longer matches.
    let mut bytes = std::fs::read(plugin).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(plugin, bytes).unwrap();
    let verify = host.synchost(&["plugin", "verify", plugin, "--key", &public]);
    assert!(!verify.status.success());
    assert!(stderr(&verify).contains("the file was changed after it was signed"), "{}", stderr(&verify));
}

/// A host whose diff pipeline `acme/main` maps `data/in/p.csv`.
fn diff_host() -> HostDir {
    let host = HostDir::new();
    host.write("data/in/p.csv", "id,name\n1,a\n2,b\n");
    host.write(
        "tenants/acme.toml",
        &common::file_pipeline_tenant(
            r#"{ snapshot = "/in/p.csv", key = "id" }"#,
            r#"[{ name = "id", from = "id" }, { name = "name", from = "name" }]"#,
            "mode = \"diff\"",
        ),
    );
    host
}

#[test]
fn a_reader_that_closes_the_pipe_ends_the_command_quietly() {
    let host = diff_host();
    for _ in 0..3 {
        assert!(host.sync("acme/main", &[]).0);
    }
    // `synchost runs list | head -0`: the reader is gone before the first line.
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(host.path("synchost.toml"))
        .args(["runs", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let error = stderr(&output);
    assert!(!error.contains("panicked"), "{error}");
    assert!(output.status.success(), "{:?}: {error}", output.status);
}

#[test]
fn with_json_an_error_is_json_too() {
    let host = diff_host();
    let output = host.synchost(&["sync", "acme/nope", "--json"]);
    assert!(!output.status.success());
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", stdout(&output));
    });
    assert!(error["error"].as_str().unwrap().contains("has no pipeline `nope`"), "{error}");
}

#[test]
fn without_a_config_the_error_says_how_to_give_one() {
    let empty = tempfile::tempdir().unwrap();
    let output =
        Command::new(BIN).arg("validate").current_dir(empty.path()).env_remove("SYNCHOST_CONFIG").output().unwrap();
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("cannot read the host config") && error.contains("--config PATH"), "{error}");
    assert!(!error.contains(": :"), "{error}");
}

#[test]
fn dead_letters_of_a_diff_pipeline_are_refused_as_the_wrong_kind() {
    let host = diff_host();
    let output = host.synchost(&["dlq", "list", "acme/main"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("acme/main is a diff pipeline: dead letters belong to event pipelines"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn status_exits_non_zero_while_a_pipeline_needs_someone() {
    let host = diff_host();
    assert!(host.sync("acme/main", &[]).0);
    let output = host.synchost(&["status"]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).contains("last run 1 succeeded"), "statuses read as words: {}", stdout(&output));
    // The source file is gone: the next run fails, and the tenant is degraded.
    std::fs::remove_file(host.path("data/in/p.csv")).unwrap();
    assert!(!host.sync("acme/main", &[]).0);
    let output = host.synchost(&["status", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["tenants"][0]["health"], "degraded", "{status}");
}

#[test]
fn every_command_has_help_with_an_example() {
    let commands: &[&[&str]] = &[
        &["init"],
        &["validate"],
        &["sync"],
        &["plan"],
        &["approve"],
        &["replay"],
        &["run"],
        &["reload"],
        &["status"],
        &["runs", "list"],
        &["runs", "show"],
        &["dlq", "list"],
        &["dlq", "retry"],
        &["dlq", "drop"],
        &["plugin", "inspect"],
        &["plugin", "export"],
        &["plugin", "keygen"],
        &["plugin", "sign"],
        &["plugin", "verify"],
        &["plugin", "rollback"],
        &["demo"],
    ];
    for command in commands {
        let output = Command::new(BIN).args(*command).arg("--help").output().unwrap();
        assert!(output.status.success(), "{command:?}");
        let help = stdout(&output);
        assert!(help.contains("Example"), "{command:?} has no example:\n{help}");
        assert!(help.contains(&format!("synchost {}", command.join(" "))), "{command:?}:\n{help}");
        // Every argument and option says what it is.
        for line in help.lines().filter(|l| l.starts_with("  ") && !l.starts_with("   ")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(words.len() > 1 || line.trim().is_empty(), "{command:?}: `{line}` is undescribed:\n{help}");
        }
    }
}

#[test]
fn ctrl_c_stops_a_sync_at_a_batch_boundary_and_records_it_stopped() {
    let host = HostDir::new();
    // 80 batches of 100 ms at the least: the signal lands mid-way even on a
    // busy machine.
    let events = 400;
    let changelog: String = (0..events)
        .map(|i| format!("{}\n", serde_json::json!({"op": "upsert", "row": {"id": format!("k{i}"), "n": i}})))
        .collect();
    host.write("data/in/changes.jsonl", &changelog);
    let digest = host.install_fixture("flaky_destination.wasm");
    let tenant = |delay_ms: u32, max_batch: u32| {
        common::pipeline_tenant_with_destination(
            r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
            r#"[{ name = "id", from = "id" }, { name = "n", from = "n" }]"#,
            ("flaky_destination.wasm", &digest),
            &format!("{{ dir = \"/out\", shards = 4, apply_delay_ms = {delay_ms} }}"),
            &format!("mode = \"event\"\nmax_batch = {max_batch}\nlanes = 1"),
        )
    };
    host.write("tenants/acme.toml", &tenant(100, 5));
    let child = Command::new(BIN)
        .arg("--config")
        .arg(host.path("synchost.toml"))
        .args(["sync", "acme/main", "--json"])
        .env("SYNCHOST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while host.records("data/out").len() < 10 {
        assert!(std::time::Instant::now() < deadline, "the sync never applied its first batches");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(interrupted.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(stderr(&output).contains("stopping at the next batch boundary"), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["status"], "stopped", "{report}");
    let applied = report["stats"]["upserted"].as_u64().unwrap();
    assert!(applied >= 10 && applied < events, "it stopped part-way: {report}");
    // What it committed stays; the next run goes on from its cursor.
    assert_eq!(host.records("data/out").len() as u64, applied);
    host.write("tenants/acme.toml", &tenant(0, 1000));
    let (ok, next) = host.sync("acme/main", &[]);
    assert!(ok, "{next}");
    assert_eq!(next["stats"]["read"].as_u64().unwrap(), events - applied, "{next}");
    assert_eq!(host.records("data/out").len() as u64, events);
}

#[test]
fn init_makes_a_host_directory_that_validates_and_syncs_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("mysync");
    let output = Command::new(BIN).arg("init").arg(&host).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("sync example/people"), "it says what to run next: {}", stdout(&output));
    let config = host.join("synchost.toml");
    let run = |args: &[&str]| Command::new(BIN).arg("--config").arg(&config).args(args).output().unwrap();
    let validate = run(&["validate"]);
    assert!(validate.status.success(), "{}", stderr(&validate));
    let sync = run(&["sync", "example/people", "--json"]);
    assert!(sync.status.success(), "{}", stderr(&sync));
    let records = common::read_records(&host.join("data/out"));
    assert_eq!(records.len(), 2, "the withdrawn student is filtered out: {records:?}");
    assert_eq!(records["1001"]["login"], "alovelace");
    // It never overwrites a host directory.
    let again = Command::new(BIN).arg("init").arg(&host).output().unwrap();
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists already"), "{}", stderr(&again));
}

#[test]
fn plugin_export_writes_the_bundled_plugins_and_the_lines_that_pin_them() {
    let host = HostDir::new();
    let export = host.path("exported");
    let output = host.synchost(&["plugin", "export", export.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    for plugin in synchost::bundled::ALL {
        let bytes = std::fs::read(export.join(plugin.file_name)).unwrap();
        assert_eq!(bytes, plugin.bytes, "{}", plugin.file_name);
        let pin = format!("path = \"{}\"\nsha256 = \"{}\"", plugin.file_name, common::sha256(&bytes));
        assert!(printed.contains(&pin), "missing `{pin}` in:\n{printed}");
    }
    let listed = host.json(&["plugin", "export", export.to_str().unwrap()]);
    assert_eq!(listed.as_array().unwrap().len(), synchost::bundled::ALL.len(), "{listed}");
}
