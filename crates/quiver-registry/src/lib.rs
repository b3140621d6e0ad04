//! A process's view of the registry, refreshed by polling the online store.
//!
//! Serving and ingest processes hold a [`RegistryWatcher`]. It loads the registry at start, then
//! reloads it every `interval`; a newer revision replaces the current one and wakes whoever waits
//! in [`RegistryWatcher::changed`]. So an apply reaches every process without a restart within
//! `interval` plus one store read (bounded by the store's request timeout). A failed reload keeps
//! the last good registry and is logged; the next tick tries again.

use std::sync::Arc;
use std::time::Duration;

use quiver_core::definition::Registry;
use quiver_core::store::{OnlineStore, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often processes reload the registry unless configured otherwise.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// The latest registry known to this process. Dropping it stops the refresh task.
#[derive(Debug)]
pub struct RegistryWatcher {
    current: watch::Receiver<Arc<Registry>>,
    refresh: JoinHandle<()>,
}

impl RegistryWatcher {
    /// Loads the registry once (an empty one if nothing was applied yet), then keeps reloading
    /// it every `interval` in a background task.
    pub async fn start<S: OnlineStore + 'static>(
        store: Arc<S>,
        interval: Duration,
    ) -> Result<Self, StoreError> {
        let initial = store.load_registry().await?.unwrap_or_default();
        let (sender, current) = watch::channel(Arc::new(initial));
        let refresh = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match store.load_registry().await {
                    Ok(Some(registry)) => {
                        let known = sender.borrow().revision;
                        if registry.revision != known {
                            tracing::info!(
                                from_revision = known,
                                to_revision = registry.revision,
                                "registry changed"
                            );
                            if sender.send(Arc::new(registry)).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, "registry reload failed; keeping the last one");
                    }
                }
            }
        });
        Ok(RegistryWatcher { current, refresh })
    }

    /// The registry as last loaded.
    pub fn current(&self) -> Arc<Registry> {
        self.current.borrow().clone()
    }

    /// A receiver of every registry this watcher loads, for a task of its own; it sees no more
    /// changes once the watcher is dropped.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Registry>> {
        self.current.clone()
    }

    /// Waits until a different revision has been loaded, and returns it.
    pub async fn changed(&mut self) -> Arc<Registry> {
        // The sender lives in the refresh task, which only ends when this watcher is dropped.
        let _ = self.current.changed().await;
        self.current.borrow_and_update().clone()
    }
}

impl Drop for RegistryWatcher {
    fn drop(&mut self) {
        self.refresh.abort();
    }
}
