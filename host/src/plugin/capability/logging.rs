//! A plugin's stdout, stderr and `host.log` lines, turned into log lines with
//! one budget per call.
//!
//! Plugins print (`println!`, a panic message) and log (`host.log`), and a
//! host must see it, but a plugin must not be able to flood the log or the
//! host's memory by either way. Each line is logged with the tenant and
//! plugin; once a call has written its `max_log` bytes, through any of the
//! three, the rest of that call's output is dropped and counted, and the
//! count is logged once when the call ends. Writes never fail: a guest whose
//! `println!` failed would panic, turning noise into an outage.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line logged as it is, printed or sent through `host.log`;
/// longer ones are cut.
const MAX_LINE: usize = 4096;

/// Both output streams and the `host.log` lines of one instance, sharing one
/// budget.
#[derive(Clone)]
pub(in crate::plugin) struct PluginOutput {
    state: Arc<Mutex<OutputState>>,
}

struct OutputState {
    tenant: String,
    plugin: String,
    budget: u64,
    left: u64,
    dropped: u64,
    /// Unfinished last line of each stream: stdout, stderr.
    partial: [Vec<u8>; 2],
}

/// One of the two streams.
#[derive(Clone)]
pub(in crate::plugin) struct Stream {
    output: PluginOutput,
    index: usize,
}

impl PluginOutput {
    pub(in crate::plugin) fn new(tenant: &str, plugin: &str, budget: u64) -> PluginOutput {
        let state = OutputState {
            tenant: tenant.to_string(),
            plugin: plugin.to_string(),
            budget,
            left: budget,
            dropped: 0,
            partial: [Vec::new(), Vec::new()],
        };
        PluginOutput { state: Arc::new(Mutex::new(state)) }
    }

    pub(in crate::plugin) fn stdout(&self) -> Stream {
        Stream { output: self.clone(), index: 0 }
    }

    pub(in crate::plugin) fn stderr(&self) -> Stream {
        Stream { output: self.clone(), index: 1 }
    }

    /// Ends a call: logs unfinished lines and what was dropped, and renews
    /// the budget for the next call.
    pub(in crate::plugin) fn end_call(&self) {
        let mut state = self.state.lock().expect("plugin output lock poisoned");
        for index in 0..2 {
            let line = std::mem::take(&mut state.partial[index]);
            if !line.is_empty() {
                state.log(index, &line);
            }
        }
        if state.dropped > 0 {
            tracing::warn!(
                tenant = %state.tenant,
                plugin = %state.plugin,
                "the plugin wrote {} more bytes to stdout, stderr and host.log in one call than its max_log of {}; \
                 they were dropped",
                state.dropped,
                bytesize::ByteSize::b(state.budget)
            );
        }
        state.left = state.budget;
        state.dropped = 0;
    }

    /// A `host.log` line, cut at [`MAX_LINE`] like a line of output and
    /// charged to the call's budget like one (with its newline). A line that
    /// does not fit whole is dropped whole.
    pub(in crate::plugin) fn log_line(&self, level: tracing::Level, message: &str) {
        let mut end = message.len().min(MAX_LINE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &message[..end];
        let mut state = self.state.lock().expect("plugin output lock poisoned");
        let cost = message.len() as u64 + 1;
        if cost > state.left {
            state.dropped += cost;
            state.left = 0;
            return;
        }
        state.left -= cost;
        let (tenant, plugin) = (state.tenant.as_str(), state.plugin.as_str());
        match level {
            tracing::Level::TRACE => tracing::trace!(tenant, plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(tenant, plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(tenant, plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(tenant, plugin, "{message}"),
            tracing::Level::ERROR => tracing::error!(tenant, plugin, "{message}"),
        }
    }

    fn write(&self, index: usize, mut bytes: &[u8]) {
        let mut state = self.state.lock().expect("plugin output lock poisoned");
        let take = bytes.len().min(state.left as usize);
        state.dropped += (bytes.len() - take) as u64;
        state.left -= take as u64;
        bytes = &bytes[..take];
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut state.partial[index]);
            line.extend_from_slice(&bytes[..end]);
            state.log(index, &line);
            bytes = &bytes[end + 1..];
        }
        // An unfinished line is kept only up to what would be logged of it.
        let room = MAX_LINE.saturating_sub(state.partial[index].len());
        state.partial[index].extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl OutputState {
    fn log(&self, index: usize, line: &[u8]) {
        let line = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
        let stream = if index == 0 { "stdout" } else { "stderr" };
        tracing::info!(tenant = %self.tenant, plugin = %self.plugin, stream, "{}", line.trim_end_matches('\r'));
    }
}

impl IsTerminal for Stream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Stream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Stream {
    async fn ready(&mut self) {}
}

impl OutputStream for Stream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.output.write(self.index, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.output.write(self.index, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_budget_is_dropped_and_the_budget_renews_each_call() {
        let output = PluginOutput::new("t", "p", 10);
        output.write(0, b"12345\n67890abcdef\n");
        {
            let state = output.state.lock().unwrap();
            assert_eq!((state.left, state.dropped), (0, 8));
            assert_eq!(state.partial[0], b"6789");
        }
        output.end_call();
        let state = output.state.lock().unwrap();
        assert_eq!((state.left, state.dropped), (10, 0));
        assert!(state.partial[0].is_empty());
    }

    #[test]
    fn host_log_lines_share_the_budget_with_stdout_and_stderr() {
        let output = PluginOutput::new("t", "p", 10);
        output.log_line(tracing::Level::INFO, "1234"); // 5 bytes with its newline
        output.write(1, b"abc\n"); // 4 more
        output.log_line(tracing::Level::WARN, "xy"); // 3: does not fit, dropped whole
        {
            let state = output.state.lock().unwrap();
            assert_eq!((state.left, state.dropped), (0, 3));
        }
        output.end_call();
        output.log_line(tracing::Level::INFO, "again");
        let state = output.state.lock().unwrap();
        assert_eq!((state.left, state.dropped), (4, 0), "a new call has a new budget");
    }
}
