//! The last word of a process that faults on a memory-mapped file.
//!
//! SQLite keeps the state store's write-ahead-log index in `state.db-shm`,
//! mapped into memory. When that file becomes unwritable under the process
//! (made immutable, a filesystem remounted read-only after an I/O error) or
//! is cut short, the next access to the mapping raises SIGBUS, which kills
//! the process with no word at all. Nothing can carry on past that fault:
//! the memory is gone. What this module adds is the word: a handler that
//! names the likely file and what to do, and exits with [`EXIT_MAPPED_FILE`].
//! Nothing committed is lost (every cursor and run record is committed
//! before it counts), so a restart once the directory is fixed resumes.
//!
//! wasmtime installs its own SIGBUS handler for traps in wasm code when the
//! first engine is made, and hands every other fault to the handler that was
//! there before it: this one, installed first thing in `main`.

use std::sync::OnceLock;

/// The exit status after the fault (EX_IOERR).
pub const EXIT_MAPPED_FILE: i32 = 74;

/// The message the handler writes, made in advance: a signal handler may
/// not allocate.
static MESSAGE: OnceLock<Box<[u8]>> = OnceLock::new();

const GENERIC: &[u8] = b"synchost: fatal: SIGBUS: a memory-mapped file became unreadable or unwritable \
(a read-only or full filesystem, or a file cut short under the process); nothing committed is lost\n";

/// Installs the handler. Call it before anything maps a file or starts a
/// thread (first thing in `main`).
pub fn install() {
    // SAFETY: `on_fault` only reads a value set before and calls the
    // async-signal-safe `write` and `_exit`; the sigaction struct is fully
    // initialised (zeroed, then the fields that matter set).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_fault as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

/// Names the state store's shared-memory file in the message, once a store
/// is opened at `state_file` (its `state.db`).
pub fn note_state_file(state_file: &std::path::Path) {
    let state_file = std::path::absolute(state_file).unwrap_or_else(|_| state_file.to_path_buf());
    let shm = format!("{}-shm", state_file.display());
    let message = format!(
        "synchost: fatal: SIGBUS: a memory-mapped file became unreadable or unwritable, most likely the state \
         store's `{shm}` (a read-only or full filesystem, a file made immutable, or one cut short under the \
         process). Nothing committed is lost: make the state directory writable again and start synchost again.\n"
    );
    let _ = MESSAGE.set(message.into_bytes().into_boxed_slice());
}

extern "C" fn on_fault(_signal: libc::c_int, _info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    let message: &[u8] = MESSAGE.get().map_or(GENERIC, |m| m);
    // SAFETY: `write` and `_exit` are async-signal-safe; the buffer lives
    // for the whole process.
    unsafe {
        libc::write(libc::STDERR_FILENO, message.as_ptr().cast(), message.len());
        libc::_exit(EXIT_MAPPED_FILE);
    }
}
