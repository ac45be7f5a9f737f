//! What the config targets share: a scratch host directory, and the rules
//! every refusal of a config file keeps.

use std::path::Path;

use synchost::config::ConfigErrors;

/// A refusal names at least one problem, each at a place in the file that was
/// read (a line of its text, or the file as a whole) and with a message.
pub fn assert_well_reported(errors: &ConfigErrors, file: &Path, text: &[u8]) {
    assert!(!errors.0.is_empty(), "a refusal with no problem in it");
    let lines = text.split(|b| *b == b'\n').count();
    for error in &errors.0 {
        assert!(error.location.file.starts_with(file.parent().unwrap()), "{error}: not in the host directory");
        if error.location.file == file {
            assert!(error.location.line <= lines, "{error}: past the file's {lines} lines");
        }
        assert!(!error.message.trim().is_empty(), "{error}: no message");
    }
}
