//! pushd's side of the operator view (lib/health/): every target's
//! [`TargetHealth`] under one lock, the `STATUS=` text made from them, and
//! the status and metrics files, written from the ticker.

use std::sync::Mutex;
use std::time::SystemTime;

use crate::health::publish::{HealthFiles, Publisher};
use crate::health::status::{target_metrics, StatusDoc, TargetReport};
use crate::health::target::{summary, TargetHealth};

pub(crate) struct Health {
    inner: Mutex<Inner>,
}

struct Inner {
    targets: Vec<TargetHealth>,
    publisher: Publisher,
    /// `READY=1` was sent.
    ready: bool,
}

impl Health {
    pub(crate) fn new(names: impl IntoIterator<Item = String>, files: &HealthFiles) -> Self {
        Health {
            inner: Mutex::new(Inner {
                targets: names.into_iter().map(|n| TargetHealth::new(&n)).collect(),
                publisher: Publisher::new(files),
                ready: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes one target's numbers. True when its state changed (worth
    /// telling systemd at once rather than at the next periodic update).
    pub(crate) fn update(&self, index: usize, change: impl FnOnce(&mut TargetHealth)) -> bool {
        let mut inner = self.lock();
        let before = inner.targets[index].state();
        change(&mut inner.targets[index]);
        let after = inner.targets[index].state();
        inner.publisher.changed();
        before != after
    }

    /// A copy of one target's numbers.
    pub(crate) fn get(&self, index: usize) -> TargetHealth {
        self.lock().targets[index].clone()
    }

    /// `STATUS=`: the targets, worst first.
    pub(crate) fn summary(&self) -> String {
        summary(&self.lock().targets, SystemTime::now())
    }

    pub(crate) fn set_ready(&self) {
        let mut inner = self.lock();
        inner.ready = true;
        inner.publisher.changed();
    }

    /// Writes the files when due (`force`: now).
    pub(crate) fn tick(&self, force: bool) {
        let mut inner = self.lock();
        let Inner {
            targets,
            publisher,
            ready,
        } = &mut *inner;
        publisher.tick(force, |now| {
            let mut doc = StatusDoc::new("pushd", now, *ready, summary(targets, now));
            doc.targets = targets.iter().map(|t| TargetReport::of(t, now)).collect();
            (doc, target_metrics(targets, *ready, now))
        });
    }
}
