//! Watching the tenant files and the plugin files: a change asks the daemon
//! for a reload. Only changes count (a file created, written, renamed,
//! removed, its permissions changed), never reads: a reload reads every
//! plugin file, and reacting to that would reload for ever.

use std::path::Path;

use notify::event::{MetadataKind, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watches `dirs` (not their subfolders); sends `()` on `changed` for each
/// change. The watch lasts as long as the returned watcher.
pub(super) fn watch(dirs: &[&Path], changed: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        // A full queue means a reload is already due: this one adds nothing.
        Ok(event) if is_change(&event.kind) => {
            let _ = changed.try_send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("watching the config files: {e}"),
    })?;
    for dir in dirs {
        if dir.is_dir() {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
    }
    Ok(watcher)
}

fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}
