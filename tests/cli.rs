//! The command line itself: help, plugin inspection and signing, and the demo.

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
        assert_eq!(info["wit_version"], "0.2.0");
        assert_eq!(info["info"]["name"], name);
        assert_eq!(info["info"]["wit_version"], "0.2.0");
        assert_eq!(info["sha256"], common::sha256(&std::fs::read(&path).unwrap()));
    }
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
    assert!(stderr(&output).contains("no tenant `globex` (tenants: acme)"), "{}", stderr(&output));
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

    // What it built is a working host directory.
    let config = demo.join("synchost.toml");
    let output = Command::new(BIN).arg("--config").arg(&config).arg("validate").output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
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
