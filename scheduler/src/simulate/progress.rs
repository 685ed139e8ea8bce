//! A one-line progress display on stderr for long replays (only when stderr
//! is a terminal, so logs and CI output stay clean).

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// A progress bar on stderr for one replay, drawn only when stderr is a terminal.
pub struct Progress {
    label: String,
    enabled: bool,
    start: Instant,
    last_pct: usize,
}

impl Progress {
    /// A bar titled `label`, its clock started now.
    pub fn new(label: impl Into<String>) -> Self {
        Progress {
            label: label.into(),
            enabled: std::io::stderr().is_terminal(),
            start: Instant::now(),
            last_pct: usize::MAX,
        }
    }

    /// Redraws the bar for `done` of `total` pods, only when the whole percentage changes;
    /// ends the line once all are done.
    pub fn update(&mut self, done: usize, total: usize) {
        let pct = done * 100 / total.max(1);
        if !self.enabled || pct == self.last_pct {
            return;
        }
        self.last_pct = pct;
        let width = 30;
        let filled = pct * width / 100;
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not stop the run.
        let _ = write!(
            err,
            "\r{:<28} [{}{}] {:>3}% {:>6}/{} pods {:>5.1}s",
            self.label,
            "#".repeat(filled),
            " ".repeat(width - filled),
            pct,
            done,
            total,
            self.start.elapsed().as_secs_f64()
        );
        if done >= total {
            let _ = writeln!(err);
        }
    }
}
