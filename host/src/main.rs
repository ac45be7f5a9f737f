//! The `synchost` command.

fn main() -> std::process::ExitCode {
    synchost::cli::main()
}
