//! `--fake-xid-file FILE`: XID events injected by appending lines to a text file, for nodes
//! running on the fake inventory. Each full line `<gpu-uuid> <xid> [<gpu-instance-id>]`
//! becomes an [`XidEvent`] on the same channel NVML's event thread feeds, so injected faults
//! go through the real health path (marking, recovery, node condition). The file is polled:
//! it may not exist yet, may be truncated or replaced, and a last line without its newline
//! waits until it is complete.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::num::ParseIntError;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::devices::XidEvent;

/// How often the file is checked for new lines.
pub const FAKE_XID_POLL: Duration = Duration::from_millis(200);

/// A line of the XID file that is not `<gpu-uuid> <xid> [<gpu-instance-id>]`.
#[derive(Debug, thiserror::Error)]
pub enum BadXidLine {
    /// Too few or too many fields.
    #[error("expected `<gpu-uuid> <xid> [<gpu-instance-id>]`, got {0:?}")]
    Shape(String),
    /// The XID or the GPU instance id is not a number.
    #[error("bad {field} {text:?} in {line:?}")]
    Number {
        /// `xid` or `gpu instance id`.
        field: &'static str,
        /// The field as written.
        text: String,
        /// The whole line.
        line: String,
        /// Why it does not parse.
        #[source]
        source: ParseIntError,
    },
}

/// Parses one line; `Ok(None)` for a blank line or a `#` comment.
pub fn parse_xid_line(line: &str) -> Result<Option<XidEvent>, BadXidLine> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    let (gpu, xid, instance) = match fields.as_slice() {
        [gpu, xid] => (*gpu, *xid, None),
        [gpu, xid, instance] => (*gpu, *xid, Some(*instance)),
        _ => return Err(BadXidLine::Shape(trimmed.to_string())),
    };
    let bad = |field: &'static str, text: &str, source: ParseIntError| BadXidLine::Number {
        field,
        text: text.to_string(),
        line: trimmed.to_string(),
        source,
    };
    let xid_value = xid
        .parse::<u64>()
        .map_err(|source| bad("xid", xid, source))?;
    let gpu_instance_id = match instance {
        Some(text) => Some(
            text.parse::<u32>()
                .map_err(|source| bad("gpu instance id", text, source))?,
        ),
        None => None,
    };
    Ok(Some(XidEvent {
        gpu_uuid: gpu.to_string(),
        gpu_instance_id,
        xid: xid_value,
    }))
}

/// Where the tail has got to in the file.
#[derive(Debug, Default)]
struct Tail {
    /// Which file (device and inode) was being read; a new one is read from its start.
    identity: Option<(u64, u64)>,
    offset: u64,
    /// Bytes after the last newline, waiting for the rest of their line.
    partial: Vec<u8>,
}

impl Tail {
    /// Reads what was appended since the last call; returns the complete new lines.
    fn poll(&mut self, path: &Path) -> std::io::Result<Vec<String>> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                // Not there (yet, or any more): whatever appears next is read from its start.
                *self = Tail::default();
                return Ok(Vec::new());
            }
            Err(error) => return Err(error),
        };
        let identity = (meta.dev(), meta.ino());
        if self.identity != Some(identity) || meta.len() < self.offset {
            // A new file, or this one truncated: start over.
            *self = Tail {
                identity: Some(identity),
                ..Tail::default()
            };
        }
        if meta.len() == self.offset {
            return Ok(Vec::new());
        }
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut fresh = Vec::new();
        let read = file.read_to_end(&mut fresh)?;
        self.offset += read as u64;
        self.partial.extend_from_slice(&fresh);
        let Some(last_newline) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        Ok(String::from_utf8_lossy(&complete)
            .lines()
            .map(str::to_string)
            .collect())
    }
}

/// Tails `path` every [`FAKE_XID_POLL`] and sends an event for each complete line appended to
/// it (lines already in the file at start count too). Malformed lines are logged and skipped.
/// The task ends when the receiver is dropped. Must be called inside a Tokio runtime.
pub fn spawn_fake_xid_events(path: PathBuf) -> mpsc::Receiver<XidEvent> {
    spawn_with_poll(path, FAKE_XID_POLL)
}

fn spawn_with_poll(path: PathBuf, every: Duration) -> mpsc::Receiver<XidEvent> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut tail = Tail::default();
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = tx.closed() => return,
            }
            // File reads are small and local; a blocking task keeps the runtime free anyway.
            let polled = {
                let path = path.clone();
                let mut moved = std::mem::take(&mut tail);
                match tokio::task::spawn_blocking(move || {
                    let lines = moved.poll(&path);
                    (moved, lines)
                })
                .await
                {
                    Ok((back, lines)) => {
                        tail = back;
                        lines
                    }
                    Err(error) => {
                        tracing::warn!(%error, "fake XID file reader failed; reading from the start");
                        continue;
                    }
                }
            };
            let lines = match polled {
                Ok(lines) => lines,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot read the fake XID file");
                    continue;
                }
            };
            for line in lines {
                match parse_xid_line(&line) {
                    Ok(Some(event)) => {
                        tracing::info!(gpu = %event.gpu_uuid, xid = event.xid, gpu_instance = ?event.gpu_instance_id, "injected XID");
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "malformed fake XID line skipped");
                    }
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        std::env::temp_dir().join(format!("ks-fake-xid-{}-{n}-{name}", std::process::id()))
    }

    fn event(gpu: &str, xid: u64, gi: Option<u32>) -> XidEvent {
        XidEvent {
            gpu_uuid: gpu.into(),
            gpu_instance_id: gi,
            xid,
        }
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_parse_or_say_why_not() {
        assert_eq!(
            parse_xid_line("GPU-0 79").unwrap(),
            Some(event("GPU-0", 79, None))
        );
        assert_eq!(
            parse_xid_line("  GPU-2\t94 3 ").unwrap(),
            Some(event("GPU-2", 94, Some(3)))
        );
        assert_eq!(parse_xid_line("   ").unwrap(), None);
        assert_eq!(parse_xid_line("# a comment").unwrap(), None);
        assert!(matches!(parse_xid_line("GPU-0"), Err(BadXidLine::Shape(_))));
        assert!(matches!(
            parse_xid_line("GPU-0 1 2 3"),
            Err(BadXidLine::Shape(_))
        ));
        let error = parse_xid_line("GPU-0 seventy-nine").unwrap_err();
        assert!(error.to_string().contains("bad xid"), "{error}");
        let error = parse_xid_line("GPU-0 79 99999999999").unwrap_err();
        assert!(error.to_string().contains("gpu instance id"), "{error}");
    }

    #[test]
    fn the_tail_waits_for_the_file_and_full_lines_and_restarts_after_truncation() {
        let path = temp_path("tail");
        let mut tail = Tail::default();
        assert!(tail.poll(&path).unwrap().is_empty(), "no file yet");
        append(&path, "GPU-0 79\nGPU-1 4");
        assert_eq!(tail.poll(&path).unwrap(), ["GPU-0 79"]);
        append(&path, "8 2\n");
        assert_eq!(tail.poll(&path).unwrap(), ["GPU-1 48 2"]);
        assert!(tail.poll(&path).unwrap().is_empty());
        std::fs::write(&path, "GPU-3 31\n").unwrap();
        assert_eq!(tail.poll(&path).unwrap(), ["GPU-3 31"], "truncated");
        std::fs::remove_file(&path).unwrap();
        assert!(tail.poll(&path).unwrap().is_empty());
        append(&path, "GPU-0 79\n");
        assert_eq!(tail.poll(&path).unwrap(), ["GPU-0 79"], "recreated");
        std::fs::remove_file(&path).unwrap();
    }

    async fn next(events: &mut mpsc::Receiver<XidEvent>) -> XidEvent {
        tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn appended_lines_become_events_and_bad_ones_are_skipped() {
        let path = temp_path("events");
        let mut events = spawn_with_poll(path.clone(), Duration::from_millis(10));
        append(&path, "GPU-0 79\nnot an event\nGPU-2 94 3\nGPU-1 4");
        assert_eq!(next(&mut events).await, event("GPU-0", 79, None));
        assert_eq!(next(&mut events).await, event("GPU-2", 94, Some(3)));
        append(&path, "8\n");
        assert_eq!(next(&mut events).await, event("GPU-1", 48, None));
        drop(events);
        std::fs::remove_file(&path).unwrap();
    }
}
