//! A run archive as `approve`, `replay` and `runs show` read it back, after a
//! disk or a hand edit has had its way with it: `meta.json`, the plan and a
//! row stream, from any bytes. It reads, or is refused naming its file; what
//! reads back is fit to apply (every planned row has a value per column) and
//! every page is a table that passes the host's check.
//!
//! The input is the three files' text cut by 0xFF bytes (never in UTF-8
//! text): `meta.json`, then the plan and the rows uncompressed, which the
//! target compresses as the host does, so that mutations reach the readers
//! rather than stop at zstd's frame check. An input that starts with 0xFF
//! gives the row stream's bytes as they are, compressed or not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synchost::sync::diff::archive::{ArchiveFile, read_meta, read_pages, read_plan};

fn file(name: &str, bytes: Vec<u8>) -> ArchiveFile {
    ArchiveFile { name: format!("run 1/{name}"), bytes }
}

fn compressed(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 1).expect("zstd compresses")
}

fuzz_target!(|data: &[u8]| {
    if let Some(raw) = data.strip_prefix(&[0xFF]) {
        check_pages(&file("raw.jsonl.zst", raw.to_vec()));
        return;
    }
    let mut parts = data.splitn(3, |b| *b == 0xFF);
    let (meta, plan, rows) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (meta, plan) = (file("meta.json", meta.to_vec()), file("plan.jsonl.zst", compressed(plan)));

    match read_meta(&meta).and_then(|meta| read_plan(&plan, &meta)) {
        Ok(plan) => {
            let columns = plan.columns.len();
            for row in plan.creates.iter().chain(plan.updates.iter().map(|update| &update.row)) {
                assert_eq!(row.values.len(), columns, "planned row `{}` read back unfit to apply", row.key);
            }
        }
        Err(error) => assert!(error.file == meta.name || error.file == plan.name, "{error}: names no file of the archive"),
    }
    check_pages(&file("source.jsonl.zst", compressed(rows)));
});

fn check_pages(rows: &ArchiveFile) {
    match read_pages(rows) {
        Ok(pages) => {
            for page in pages {
                assert_eq!(page.check(), Ok(()), "a page read back fails the host's table check");
            }
        }
        Err(error) => assert_eq!(error.file, rows.name, "{error}: names another file"),
    }
}
