//! The `synchost` command.

// Every row crossing a plugin boundary is a handful of small allocations on
// the host; mimalloc serves them markedly faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    synchost::cli::main()
}
