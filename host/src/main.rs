//! The `synchost` command.

// Every row crossing a plugin boundary is a handful of small allocations on
// the host; mimalloc serves them markedly faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Errors carry a backtrace when RUST_BACKTRACE=1 is set, and some of them
    // reach plugins as text (wasi:io's `to-debug-string`): the host's stack is
    // not for untrusted code to read. RUST_LIB_BACKTRACE=0 turns off capture
    // for library errors only, so a panic still prints its backtrace; an
    // operator who sets RUST_LIB_BACKTRACE keeps their choice.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: nothing else runs yet: no thread exists that could read
        // the environment meanwhile.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    synchost::fault::install();
    synchost::cli::main()
}
