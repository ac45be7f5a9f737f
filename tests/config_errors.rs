//! Every kind of config mistake gets one clear error naming the file, line and
//! key, from `synchost validate` (and `synchost sync` refuses to start).

mod common;

use common::{HostDir, file_pipeline_tenant, stderr, stdout};

const FIELDS: &str = r#"[{ name = "id", from = "id" }]"#;

fn valid_tenant() -> String {
    file_pipeline_tenant(
        r#"{ snapshot = "/in/people.csv", key = "id" }"#,
        FIELDS,
        "mode = \"diff\"\nschedule = \"every 5m\"",
    )
}

/// Writes `tenant` as tenants/acme.toml, runs validate, and returns its stderr
/// after checking that it failed.
fn validate_fails(host: &HostDir, tenant: &str) -> String {
    host.write("tenants/acme.toml", tenant);
    let output = host.synchost(&["validate"]);
    assert!(!output.status.success(), "validate passed:\n{}", stdout(&output));
    stderr(&output)
}

/// The 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no `{needle}` in the tenant file")) + 1
}

#[test]
fn a_valid_config_validates() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &valid_tenant());
    let output = host.synchost(&["validate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("valid (1 tenant(s), 3 plugin(s), 1 pipeline(s))"), "{}", stdout(&output));
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace("[plugins.map]\n", "[plugins.map]\ncolour = \"blue\"\n");
    let error = validate_fails(&host, &tenant);
    let line = line_of(&tenant, "colour");
    assert!(error.contains(&format!("acme.toml:{line}:")), "{error}");
    assert!(error.contains("plugins.map.colour") && error.contains("unknown field `colour`"), "{error}");
}

#[test]
fn an_unknown_key_in_the_host_config_is_named() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &valid_tenant());
    host.write("synchost.toml", &common::host_config("[limits]\ncall_timeout = \"5s\"\nthreads = 4\n"));
    let output = host.synchost(&["validate"]);
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(
        error.contains("synchost.toml:5:")
            && error.contains("limits.threads")
            && error.contains("unknown field `threads`"),
        "{error}"
    );
}

#[test]
fn a_missing_host_config_is_named() {
    let host = HostDir::new();
    let output = std::process::Command::new(common::BIN)
        .args(["--config"])
        .arg(host.path("nowhere.toml"))
        .arg("validate")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("nowhere.toml") && error.contains("cannot read the host config"), "{error}");
}

#[test]
fn a_missing_plugin_file_is_named() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace("path = \"field_mapper.wasm\"", "path = \"mapper-v2.wasm\"");
    let error = validate_fails(&host, &tenant);
    let line = line_of(&tenant, "mapper-v2.wasm");
    assert!(error.contains(&format!("acme.toml:{line}:8: plugins.map.path")), "{error}");
    assert!(error.contains("cannot read plugin file") && error.contains("mapper-v2.wasm"), "{error}");
}

#[test]
fn a_digest_mismatch_names_both_digests() {
    let host = HostDir::new();
    let real = common::sha256(synchost::bundled::FIELD_MAPPER.bytes);
    let pinned = "ab".repeat(32);
    let tenant = valid_tenant().replace(&real, &pinned);
    let error = validate_fails(&host, &tenant);
    let line = line_of(&tenant, &pinned);
    assert!(error.contains(&format!("acme.toml:{line}:10: plugins.map.sha256: digest mismatch")), "{error}");
    assert!(error.contains(&format!("the file has {real}")) && error.contains(&format!("pins {pinned}")), "{error}");
}

#[test]
fn a_plugin_of_the_wrong_kind_is_named_where_it_is_used() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace("source = \"src\"", "source = \"dst\"");
    let error = validate_fails(&host, &tenant);
    let line = line_of(&tenant, "source = \"dst\"");
    assert!(error.contains(&format!("acme.toml:{line}:10: pipelines.main.source")), "{error}");
    assert!(error.contains("plugin `dst` is a destination plugin, but this place needs a source plugin"), "{error}");
}

#[test]
fn a_pipeline_naming_a_missing_plugin_is_named() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace("transforms = [\"map\"]", "transforms = [\"mapper\"]");
    let error = validate_fails(&host, &tenant);
    let line = line_of(&tenant, "transforms = [\"mapper\"]");
    assert!(error.contains(&format!("acme.toml:{line}:15: pipelines.main.transforms[0]")), "{error}");
    assert!(error.contains("no plugin named `mapper` in this tenant (it has: dst, map, src)"), "{error}");
}

#[test]
fn an_invalid_schedule_is_named() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace("every 5m", "every 5 fortnights-ish");
    let error = validate_fails(&host, &tenant);
    let line = line_of(&tenant, "fortnights");
    assert!(error.contains(&format!("acme.toml:{line}:12: pipelines.main.schedule: invalid schedule")), "{error}");
    assert!(error.contains("every 5 fortnights-ish"), "{error}");
}

#[test]
fn a_toml_syntax_error_is_named() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace("mode = \"diff\"", "mode = diff");
    let error = validate_fails(&host, &tenant);
    let line = line_of(&tenant, "mode = diff");
    assert!(error.contains(&format!("acme.toml:{line}:")), "{error}");
}

#[test]
fn an_unknown_mode_is_named() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace("mode = \"diff\"", "mode = \"mirror\"");
    let error = validate_fails(&host, &tenant);
    assert!(error.contains("unknown variant `mirror`, expected `diff` or `event`"), "{error}");
}

#[test]
fn all_problems_are_reported_in_one_pass() {
    let host = HostDir::new();
    let tenant =
        valid_tenant().replace("every 5m", "whenever").replace("destination = \"dst\"", "destination = \"nowhere\"");
    let error = validate_fails(&host, &tenant);
    assert!(error.contains("pipelines.main.schedule") && error.contains("pipelines.main.destination"), "{error}");
    assert!(error.contains("2 problem(s) found"), "{error}");
}

#[test]
fn a_plugin_built_for_another_wit_version_is_refused_naming_both_versions() {
    // The bundled mapper with its export renamed to a future WIT version (the
    // same length, so the binary stays well formed).
    let host = HostDir::new();
    let from = b"synchost:plugin/transform@0.2.3";
    let to = b"synchost:plugin/transform@0.9.0";
    let mut bytes = synchost::bundled::FIELD_MAPPER.bytes.to_vec();
    let mut replaced = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            replaced += 1;
        }
        i += 1;
    }
    assert!(replaced > 0, "the mapper's export name was not found");
    std::fs::write(host.path("plugins/future.wasm"), &bytes).unwrap();
    let tenant = valid_tenant()
        .replace("path = \"field_mapper.wasm\"", "path = \"future.wasm\"")
        .replace(&common::sha256(synchost::bundled::FIELD_MAPPER.bytes), &common::sha256(&bytes));
    let error = validate_fails(&host, &tenant);
    assert!(
        error.contains(
            "plugin `map` was built against synchost:plugin@0.9.0, but this host supports synchost:plugin@0.2.3 (or 0.1.x up to 0.1.1)"
        ),
        "{error}"
    );
}

#[test]
fn sync_refuses_to_start_on_a_broken_config() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &valid_tenant().replace("every 5m", "whenever"));
    let output = host.synchost(&["sync", "acme/main"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("pipelines.main.schedule"), "{}", stderr(&output));
}

#[test]
fn a_malformed_allowed_host_is_named_with_how_to_write_one() {
    let host = HostDir::new();
    let tenant = valid_tenant()
        .replace("[plugins.map]\n", "[plugins.map]\nallowed_hosts = [\"api.example.com\", \"https://x.io/v1\"]\n");
    let error = validate_fails(&host, &tenant);
    assert!(error.contains(&format!("acme.toml:{}:", line_of(&tenant, "allowed_hosts"))), "{error}");
    assert!(error.contains("plugins.map.allowed_hosts[1]") && error.contains("without a scheme or path"), "{error}");
}

#[test]
fn limits_that_do_not_parse_are_each_named() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace(
        "[plugins.map]\n",
        "[plugins.map.limits]\nmax_rows = 0\nmax_output = \"lots\"\nhttp_timeout = \"soon\"\n\n[plugins.map]\n",
    );
    let error = validate_fails(&host, &tenant);
    for (key, message) in [
        ("plugins.map.limits.max_rows", "must be more than zero"),
        ("plugins.map.limits.max_output", "is not a size"),
        ("plugins.map.limits.http_timeout", "is not a duration"),
    ] {
        assert!(error.contains(&format!("{key}: ")) && error.contains(message), "{key}: {error}");
    }
}

#[test]
fn a_fuel_limit_needs_the_host_to_meter_fuel() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace("[plugins.map]\n", "[plugins.map.limits]\nfuel = 1000000\n\n[plugins.map]\n");
    let error = validate_fails(&host, &tenant);
    assert!(
        error.contains("plugins.map.limits.fuel") && error.contains("set `[limits] fuel` in synchost.toml"),
        "{error}"
    );

    // With metering on in the host config, the same tenant file is valid.
    host.write("synchost.toml", &common::host_config("[limits]\nfuel = 100000000000\n"));
    let output = host.synchost(&["validate"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn when_signatures_are_required_an_unsigned_plugin_is_refused_by_name() {
    let host = HostDir::new();
    let key = host.path("publisher.key");
    let keygen = host.synchost(&["plugin", "keygen", key.to_str().unwrap()]);
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let public = stdout(&keygen).trim().to_string();
    host.write(
        "synchost.toml",
        &common::host_config(&format!("require_signatures = true\ntrusted_keys = [\"{public}\"]\n")),
    );
    let error = validate_fails(&host, &valid_tenant());
    assert!(error.contains("plugins.map.path") && error.contains("field_mapper.wasm` is refused"), "{error}");
    assert!(error.contains("no signature file") && error.contains("requires signed plugins"), "{error}");

    // Signing every plugin with the trusted key makes the same config valid.
    for plugin in synchost::bundled::ALL {
        let file = host.path(&format!("plugins/{}", plugin.file_name));
        let sign = host.synchost(&["plugin", "sign", file.to_str().unwrap(), "--key", key.to_str().unwrap()]);
        assert!(sign.status.success(), "{}", stderr(&sign));
    }
    let output = host.synchost(&["validate"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn run_budgets_are_checked_where_they_stand_and_refused_in_a_plugins_limits() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace(
        "schedule = \"every 5m\"",
        "schedule = \"every 5m\"\nmax_run_rows = 0\nmax_run_duration = \"soon\"\nmax_run_memory = \"lots\"",
    );
    let error = validate_fails(&host, &tenant);
    for (key, says) in [
        ("max_run_rows", "pipelines.main.max_run_rows: must be more than zero"),
        ("max_run_duration", "pipelines.main.max_run_duration: `soon` is not a duration"),
        ("max_run_memory", "pipelines.main.max_run_memory: `lots` is not a size"),
    ] {
        assert!(error.contains(says), "missing `{says}` in:\n{error}");
        assert!(error.contains(&format!("acme.toml:{}:", line_of(&tenant, key))), "{error}");
    }

    // A plugin's limits bound its calls, not a run.
    let tenant =
        valid_tenant().replace("[plugins.map]\n", "[plugins.map.limits]\nmax_run_rows = 10\n\n[plugins.map]\n");
    let error = validate_fails(&host, &tenant);
    assert!(error.contains("plugins.map.limits.max_run_rows: bounds a whole run, not a plugin's calls"), "{error}");

    // synchost.toml's [limits] sets the defaults.
    host.write("synchost.toml", &common::host_config("[limits]\nmax_run_duration = \"2h\"\nmax_run_rows = 1_000\n"));
    host.write("tenants/acme.toml", &valid_tenant());
    let output = host.synchost(&["validate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    host.write("synchost.toml", &common::host_config("[limits]\nmax_run_memory = \"1 KiB\"\n"));
    let output = host.synchost(&["validate"]);
    assert!(
        stderr(&output).contains("synchost.toml:4:")
            && stderr(&output).contains("limits.max_run_memory: must be at least"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_plugin_file_over_max_plugin_size_is_neither_read_nor_compiled() {
    let host = HostDir::new();
    // The bundled plugins are some hundreds of KiB.
    host.write("synchost.toml", &common::host_config("max_plugin_size = \"64 KiB\"\n"));
    let tenant = valid_tenant();
    let error = validate_fails(&host, &tenant);
    let line = line_of(&tenant, "path = \"field_mapper.wasm\"");
    assert!(error.contains(&format!("acme.toml:{line}:")), "{error}");
    assert!(
        error.contains("plugins.map.path: cannot read plugin file")
            && error.contains("more than the host's max_plugin_size of 64.0 KiB"),
        "{error}"
    );

    // `plugin inspect` keeps to the same default limit as the host.
    let plugin = host.path("plugins/field_mapper.wasm");
    let mut big = std::fs::read(&plugin).unwrap();
    big.resize(65 * 1024 * 1024, 0);
    std::fs::write(host.path("plugins/big.wasm"), &big).unwrap();
    let output = host.synchost(&["plugin", "inspect", host.path("plugins/big.wasm").to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("more than the host's max_plugin_size of 64.0 MiB: it is not compiled"),
        "{}",
        stderr(&output)
    );

    host.write("synchost.toml", &common::host_config("max_plugin_size = \"lots\"\n"));
    let output = host.synchost(&["validate"]);
    assert!(
        stderr(&output).contains("synchost.toml:3:")
            && stderr(&output).contains("max_plugin_size: `lots` is not a size"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn lanes_are_checked_for_diff_pipelines_as_for_event_ones() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace("schedule = \"every 5m\"", "schedule = \"every 5m\"\nlanes = 0");
    let error = validate_fails(&host, &tenant);
    assert!(error.contains("pipelines.main.lanes: `0` must be from 1 to 64"), "{error}");
    assert!(error.contains(&format!("acme.toml:{}:", line_of(&tenant, "lanes"))), "{error}");
    host.write("tenants/acme.toml", &tenant.replace("lanes = 0", "lanes = 8"));
    let output = host.synchost(&["validate"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn names_outside_the_safe_alphabet_are_refused_where_they_stand() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace("[pipelines.main]", "[pipelines.\"main roster\"]");
    let error = validate_fails(&host, &tenant);
    assert!(error.contains("`main roster` is not a valid pipeline name: use letters, digits"), "{error}");
    assert!(error.contains(&format!("acme.toml:{}:", line_of(&tenant, "main roster"))), "{error}");

    std::fs::remove_file(host.path("tenants/acme.toml")).unwrap();
    host.write("tenants/acme corp.toml", &valid_tenant());
    let output = host.synchost(&["validate"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("`acme corp` is not a valid tenant name"), "{}", stderr(&output));
}

#[test]
fn the_readme_config_examples_are_complete_and_valid() {
    // The README's two examples, as they stand: only the digests, which the
    // README shortens, are filled in with those of the bundled plugins.
    let readme = include_str!("../README.md");
    let example = |first_line: &str| -> String {
        let start =
            readme.find(&format!("```toml\n{first_line}\n")).unwrap_or_else(|| panic!("no `{first_line}` example"));
        let body = &readme[start + "```toml\n".len()..];
        body[..body.find("```").expect("the example ends")].to_string()
    };
    let host = HostDir::new();
    let cache = common::host_config("");
    let cache_line = cache.lines().find(|l| l.starts_with("compiled_cache_dir")).unwrap();
    host.write("synchost.toml", &format!("{cache_line}\n{}", example("# synchost.toml")));
    let mut plugin_file = String::new();
    let tenant: Vec<String> = example("# tenants/district.toml")
        .lines()
        .map(|line| {
            if let Some(path) = line.strip_prefix("path = \"") {
                plugin_file = path.trim_end_matches('"').to_string();
            }
            if line.starts_with("sha256 = \"") {
                let bundled = synchost::bundled::ALL.iter().find(|p| p.file_name == plugin_file).unwrap();
                return format!("sha256 = \"{}\"", common::sha256(bundled.bytes));
            }
            line.to_string()
        })
        .collect();
    host.write("tenants/district.toml", &tenant.join("\n"));
    host.write("data/sis/students.csv", "student_id,first_name,last_name,status\n");
    host.write("data/sis/changes.jsonl", "");
    std::fs::create_dir_all(host.path("data/lms")).unwrap();
    let output = host.synchost(&["validate"]);
    assert!(output.status.success(), "the README's examples do not validate:\n{}", stderr(&output));
}

// --- plugin config, checked against the schema each plugin declares ---

#[test]
fn a_misspelt_plugin_config_key_is_named_at_its_line_before_anything_runs() {
    let host = HostDir::new();
    let tenant = valid_tenant().replace("{ snapshot = ", "{ snapshott = ");
    let error = validate_fails(&host, &tenant);
    let line = line_of(&tenant, "snapshott");
    let column = tenant.lines().nth(line - 1).unwrap().find("snapshott").unwrap() + 1;
    assert!(
        error.contains(&format!(
            "acme.toml:{line}:{column}: plugins.src.config.snapshott: unknown key `snapshott`: the plugin does not take it"
        )),
        "{error}"
    );
    // A sync is refused with the same words, before any plugin is called.
    let output = host.synchost(&["sync", "acme/main"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("plugins.src.config.snapshott: unknown key"), "{}", stderr(&output));
    assert!(host.records("data/out").is_empty());
}

#[test]
fn wrong_types_unknown_choices_and_missing_keys_in_plugin_config_are_all_reported_in_one_pass() {
    let host = HostDir::new();
    let tenant = file_pipeline_tenant(
        // `key` is required.
        r#"{ snapshot = "/in/people.csv" }"#,
        // `type` takes integer, float, boolean, text or date.
        r#"[{ name = "id", from = "id" },
    { name = "grade", from = "grade", type = "number" }]"#,
        "mode = \"diff\"",
    )
    // `shards` is a number.
    .replace("shards = 4", "shards = \"four\"");
    let error = validate_fails(&host, &tenant);
    let expect = |needle: &str, key: &str, words: &str| {
        let line = line_of(&tenant, needle);
        assert!(
            error.lines().any(|l| l.contains(&format!("acme.toml:{line}:")) && l.contains(key) && l.contains(words)),
            "no `{key}: …{words}…` at line {line} in:\n{error}"
        );
    };
    expect("snapshot = \"/in/people.csv\" }", "plugins.src.config:", "missing key `key`, which the plugin requires");
    expect("type = \"number\"", "plugins.map.config.fields[1].type:", "\"number\"");
    expect("shards = \"four\"", "plugins.dst.config.shards:", "\"four\"");
    assert!(error.contains("3 problem(s) found"), "{error}");
}

#[test]
fn a_plugin_whose_declared_schema_is_no_schema_is_refused_as_the_plugins_fault() {
    let host = HostDir::new();
    let digest = host.install_fixture("hostile_transform.wasm");
    for (declared, words) in [
        (r#"{ not json"#, "declares a config schema that is not JSON"),
        (r#"{ "type": 12 }"#, "declares a config schema that is not a valid JSON Schema"),
    ] {
        let tenant = valid_tenant().replace(
            &format!(
                "path = \"field_mapper.wasm\"\nsha256 = \"{}\"\nconfig = {{ fields = {FIELDS} }}",
                common::sha256(synchost::bundled::FIELD_MAPPER.bytes)
            ),
            &format!(
                "path = \"hostile_transform.wasm\"\nsha256 = \"{digest}\"\nconfig = {{ attack = \"none\", declared_schema = '{declared}' }}"
            ),
        );
        assert!(tenant.contains("hostile_transform.wasm"), "the mapper's entry was not replaced");
        let error = validate_fails(&host, &tenant);
        let line = line_of(&tenant, "hostile_transform.wasm");
        assert!(
            error.contains(&format!("acme.toml:{line}:"))
                && error.contains("plugins.map.path")
                && error.contains(words),
            "{error}"
        );
    }
}

#[test]
fn every_type_error_of_a_file_is_reported_in_one_pass_not_only_the_first() {
    let host = HostDir::new();
    let tenant = valid_tenant()
        .replace("mode = \"diff\"", "mode = 5\nlanes = \"four\"\nmax_batch = -3")
        .replace("[plugins.map]\n", "[plugins.map]\ncolour = \"blue\"\n");
    let error = validate_fails(&host, &tenant);
    for (needle, key) in [
        ("mode = 5", "pipelines.main.mode"),
        ("lanes = \"four\"", "pipelines.main.lanes"),
        ("max_batch = -3", "pipelines.main.max_batch"),
        ("colour", "plugins.map.colour"),
    ] {
        let line = line_of(&tenant, needle);
        assert!(
            error.lines().any(|l| l.contains(&format!("acme.toml:{line}:")) && l.contains(key)),
            "no `{key}` at line {line} in:\n{error}"
        );
    }
    // `mode` is required: taken out for its own error, it is not reported
    // missing as well.
    assert!(!error.contains("missing field `mode`"), "{error}");
    assert!(error.contains("4 problem(s) found"), "{error}");

    // The host file too.
    let host = HostDir::new();
    host.write("tenants/acme.toml", &valid_tenant());
    host.write("synchost.toml", &common::host_config("[limits]\ncall_timeout = 5\nmemory = true\nthreads = 4\n"));
    let output = host.synchost(&["validate"]);
    let error = stderr(&output);
    assert!(!output.status.success());
    for key in ["limits.call_timeout", "limits.memory", "limits.threads"] {
        assert!(error.contains(key), "no `{key}` in:\n{error}");
    }
}

#[test]
fn a_plugin_slower_to_compile_than_max_compile_time_is_refused_by_name() {
    // No compiled-code cache, so that every plugin is compiled, and a limit
    // no compile can meet.
    let host = HostDir::new();
    host.write("tenants/acme.toml", &valid_tenant());
    host.write("synchost.toml", "state_dir = \"state\"\ncompiled_cache = false\nmax_compile_time = \"1ms\"\n");
    let error = validate_fails(&host, &valid_tenant());
    for plugin in ["src", "map", "dst"] {
        assert!(
            error.contains(&format!(
                "plugins.{plugin}.path: plugin `{plugin}` took longer than the host's max_compile_time of 1ms"
            )),
            "{error}"
        );
    }
    // A limit that is no duration is named in synchost.toml.
    host.write("synchost.toml", "state_dir = \"state\"\nmax_compile_time = \"soon\"\n");
    let output = host.synchost(&["validate"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("synchost.toml:2:") && stderr(&output).contains("max_compile_time"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_watch_debounce_of_zero_or_no_duration_is_refused_at_its_line() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &valid_tenant());
    for (value, reason) in [("0s", "must be longer than zero"), ("soon", "is not a duration")] {
        host.write("synchost.toml", &format!("state_dir = \"state\"\nwatch_debounce = \"{value}\"\n"));
        let output = host.synchost(&["validate"]);
        assert!(!output.status.success());
        let error = stderr(&output);
        assert!(
            error.contains("synchost.toml:2:") && error.contains("watch_debounce") && error.contains(reason),
            "{error}"
        );
    }
}

#[test]
fn reconcile_belongs_to_event_pipelines_and_lets_them_take_the_diff_keys() {
    let host = HostDir::new();
    let source = r#"{ snapshot = "/in/people.csv", changelog = "/in/changes.jsonl", key = "id" }"#;
    let tenant = |pipeline: &str| file_pipeline_tenant(source, FIELDS, pipeline);

    let text = tenant("mode = \"diff\"\nreconcile = \"every 1h\"");
    let errors = validate_fails(&host, &text);
    let line = line_of(&text, "reconcile =");
    assert!(errors.contains(&format!("tenants/acme.toml:{line}")), "{errors}");
    assert!(errors.contains("pipelines.main.reconcile: applies to event pipelines only"), "{errors}");

    let errors = validate_fails(&host, &tenant("mode = \"reconcile\""));
    assert!(errors.contains("unknown variant `reconcile`, expected `diff` or `event`"), "{errors}");

    let errors = validate_fails(&host, &tenant("mode = \"event\"\nreconcile = \"at dawn\""));
    assert!(errors.contains("pipelines.main.reconcile: invalid schedule `at dawn`"), "{errors}");

    // Without `reconcile`, the diff keys would do nothing on an event pipeline.
    let errors = validate_fails(&host, &tenant("mode = \"event\"\nmax_change_ratio = 0.1"));
    assert!(errors.contains("pipelines.main.max_change_ratio: applies to diff pipelines only"), "{errors}");

    // With it, they shape its reconciliations.
    host.write(
        "tenants/acme.toml",
        &tenant("mode = \"event\"\nreconcile = \"0 3 * * *\"\nmax_change_ratio = 0.1\ndeletes = \"never\""),
    );
    let output = host.synchost(&["validate"]);
    assert!(output.status.success(), "{}", stderr(&output));
}
