//! Writing to stdout without panicking when the reader has gone: `synchost
//! runs list | head -1` closes the pipe after one line, and the command
//! should then just end, as Unix tools do, not panic as `println!` would.

use std::io::Write;

/// Writes `args` and a newline to stdout; a closed pipe ends the process
/// quietly (with success: the reader took what it wanted).
pub(crate) fn write_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        gone(e);
    }
}

/// Writes `args` to stdout, without a newline.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = write!(out, "{args}").and_then(|()| out.flush()) {
        gone(e);
    }
}

fn gone(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {error}");
    std::process::exit(1)
}

/// `println!`, but ending quietly on a closed pipe (see [`write_line`]).
macro_rules! outln {
    () => { $crate::cli::out::write_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::out::write_line(format_args!($($arg)*)) };
}

/// `print!`, but ending quietly on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!($($arg)*)) };
}

pub(crate) use {out, outln};
