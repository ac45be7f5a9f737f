//! The live progress line on the terminal: an observer of the sync's events
//! (see [`crate::sync::events`]) that draws an indicatif spinner on stderr.

use std::sync::Arc;

use crate::sync::{Observer, SyncEvent, events};

/// An observer that draws the live line, or none when stderr is not a
/// terminal or the output is JSON. The line is cleared when the last copy of
/// the observer is dropped (with the job that holds it).
pub(super) fn observer(json: bool) -> Observer {
    use std::io::IsTerminal;
    if json || !std::io::stderr().is_terminal() {
        return events::ignore();
    }
    let line = Arc::new(LiveLine::new());
    Arc::new(move |event| line.show(event))
}

struct LiveLine(indicatif::ProgressBar);

impl LiveLine {
    fn new() -> LiveLine {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        LiveLine(bar)
    }

    fn show(&self, event: &SyncEvent<'_>) {
        let (phase, s) = match event {
            SyncEvent::PageRead { stats, .. } => ("reading".to_string(), *stats),
            SyncEvent::BatchApplied { done, total: Some(total), stats, .. } => {
                (format!("applying {done}/{total}"), *stats)
            }
            SyncEvent::BatchApplied { done, total: None, stats, .. } => (format!("applied {done}"), *stats),
            SyncEvent::RunFinished { .. } => return self.0.finish_and_clear(),
            _ => return,
        };
        self.0.set_message(format!(
            "{phase}: source {} rows, destination {}, applied {} (+{} ~{} -{})",
            s.read,
            s.destination,
            s.created + s.updated + s.deleted + s.upserted,
            s.created,
            s.updated,
            s.deleted
        ));
    }
}

impl Drop for LiveLine {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
