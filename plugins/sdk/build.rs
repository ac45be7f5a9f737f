//! Writes the SDK's export macros (`export_source!`, `export_destination!`,
//! `export_transform!`) with the WIT package inside them, from the SDK's own
//! copy in `wit/`: a plugin crate then generates its world's bindings without
//! a path to any WIT file, wherever it is built.

use std::fmt::Write;

const WORLDS: [(&str, &str, &str); 3] = [
    ("export_source", "source-plugin", "Source"),
    ("export_destination", "destination-plugin", "Destination"),
    ("export_transform", "transform-plugin", "Transform"),
];

fn main() {
    println!("cargo::rerun-if-changed=wit");
    let mut files: Vec<_> = std::fs::read_dir("wit")
        .expect("the SDK's wit/ directory")
        .map(|entry| entry.expect("a wit/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "wit"))
        .collect();
    files.sort();
    // One document: the package line once, then every file without its own.
    let mut package = None;
    let mut wit = String::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a readable .wit file");
        for line in text.lines() {
            if line.starts_with("package ") {
                package.get_or_insert_with(|| line.to_string());
            } else {
                writeln!(wit, "{line}").unwrap();
            }
        }
    }
    let package = package.expect("wit/ declares its package");
    assert!(!wit.contains("\"##"), "the WIT text would end the raw string it is put in");
    let version = package.trim_end_matches(';').rsplit('@').next().expect("a versioned package").to_string();

    let mut out = String::new();
    for (name, world, kind) in WORLDS {
        let jetstream = if world == "source-plugin" {
            format!("\"synchost:plugin/jetstream@{version}\": synchost_plugin_sdk::jetstream,")
        } else {
            String::new()
        };
        let module = format!("__synchost_{}", world.replace('-', "_"));
        writeln!(
            out,
            r####"
/// Exports `$plugin`, which implements [`{kind}`](crate::{kind}), as this
/// component's `{world}` world. Invoke it once, at the root of the plugin
/// crate (a `cdylib`): it generates the world's bindings (from the WIT this
/// SDK carries) and implements them with `$plugin`.
#[macro_export]
macro_rules! {name} {{
    ($plugin:ty) => {{
        #[doc(hidden)]
        mod {module} {{
            $crate::wit_bindgen::generate!({{
                inline: r##"{package}
{wit}"##,
                world: "synchost:plugin/{world}",
                with: {{
                    "synchost:plugin/types@{version}": synchost_plugin_sdk::types,
                    "synchost:plugin/host@{version}": synchost_plugin_sdk::host,
                    "synchost:plugin/sql@{version}": synchost_plugin_sdk::sql,
                    {jetstream}
                }},
                runtime_path: "synchost_plugin_sdk::wit_bindgen::rt",
            }});
        }}
        $crate::__export_{kind_lower}_impl!($plugin, {module});
    }};
}}
"####,
            kind_lower = kind.to_lowercase(),
        )
        .unwrap();
    }
    let path = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("export_macros.rs");
    std::fs::write(path, out).unwrap();
}
