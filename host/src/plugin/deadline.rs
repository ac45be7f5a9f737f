//! A call's deadline inside the host calls it makes. Epoch interruption
//! stops a call only while wasm code runs: a plugin waiting in a host call
//! (a WASI sleep, an HTTP request that never answers) would outlive its
//! `call_timeout` by as long as it likes. So every wait a plugin can ask the
//! host for is cut off at the call's deadline: a timer (`wasi:clocks`
//! `subscribe-duration` and `subscribe-instant`, which sleeps and timeouts
//! are made of) fires no later than the deadline, and an HTTP request's
//! timeouts end there too (see `capability::http`). When the wait ends the plugin is back
//! in wasm code past its deadline, and the epoch interrupts it within a tick;
//! should it return first, the call still ends as over its `call_timeout`
//! (see `instance`): it came back late, and it never got the wait it asked for.
//! The `sql` and `jetstream` host calls (`capability::sql`, `capability::jetstream`)
//! wait no longer than [`bounded`] either.
//!
//! The deadline is kept per thread: the engine is synchronous, so a plugin
//! call and every host call it makes run on the thread that made the call.

use std::cell::Cell;
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Host};

thread_local! {
    /// When the plugin call running on this thread must end.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `call` (one plugin call) under `deadline`.
pub(super) fn during_call<R>(deadline: Instant, call: impl FnOnce() -> R) -> R {
    let outer = DEADLINE.with(|d| d.replace(Some(deadline)));
    let result = call();
    DEADLINE.with(|d| d.set(outer));
    result
}

/// `wanted`, or the time left of the call in progress if that is less.
pub(super) fn bounded(wanted: Duration) -> Duration {
    bounded_by(wanted, DEADLINE.with(Cell::get))
}

fn bounded_by(wanted: Duration, deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(deadline) => wanted.min(deadline.saturating_duration_since(Instant::now())),
        None => wanted,
    }
}

/// `wasi:clocks/monotonic-clock` with its timers cut off at the deadline.
pub(super) struct DeadlineClocks;

impl HasData for DeadlineClocks {
    type Data<'a> = DeadlineClocksView<'a>;
}

pub(super) struct DeadlineClocksView<'a> {
    pub clocks: WasiClocksCtxView<'a>,
}

fn bounded_nanos(nanos: u64) -> u64 {
    bounded(Duration::from_nanos(nanos)).as_nanos() as u64
}

impl Host for DeadlineClocksView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        self.clocks.now()
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        self.clocks.resolution()
    }

    fn subscribe_instant(&mut self, when: monotonic_clock::Instant) -> wasmtime::Result<Resource<DynPollable>> {
        let wait = when.saturating_sub(self.clocks.now()?);
        self.clocks.subscribe_duration(bounded_nanos(wait))
    }

    fn subscribe_duration(&mut self, wait: monotonic_clock::Duration) -> wasmtime::Result<Resource<DynPollable>> {
        self.clocks.subscribe_duration(bounded_nanos(wait))
    }
}

/// Links the bounded clock over WASI's own.
pub(super) fn add_to_linker(linker: &mut wasmtime::component::Linker<super::ctx::PluginCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = monotonic_clock::add_to_linker::<_, DeadlineClocks>(linker, super::ctx::PluginCtx::deadline_clocks);
    linker.allow_shadowing(false);
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_ends_at_the_deadline_or_at_once_past_it() {
        let hour = Duration::from_secs(3600);
        assert_eq!(bounded(hour), hour, "no call, no deadline");
        let soon = during_call(Instant::now() + Duration::from_secs(2), || bounded(hour));
        assert!(soon <= Duration::from_secs(2) && soon > Duration::from_secs(1), "{soon:?}");
        assert_eq!(bounded_by(hour, Some(Instant::now() - Duration::from_secs(1))), Duration::ZERO);
        assert_eq!(bounded_by(Duration::from_millis(5), Some(Instant::now() + hour)), Duration::from_millis(5));
        assert_eq!(bounded(hour), hour, "the deadline ends with its call");
    }
}
