//! Notices the kubelet restarting: on start it wipes the device plugin folder and creates a new
//! `kubelet.sock`, after which every plugin must register again.
//!
//! The socket's identity (device, inode, change time) is polled rather than watched with
//! inotify: polling needs no extra dependency and at a 100 ms period keeps re-registration well
//! within a second. A delete-and-recreate that reuses the inode number within one tick of the
//! file system's coarse clock looks unchanged, so the plugin host also watches its own sockets
//! (which the kubelet deletes) disappearing.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

/// Default polling period.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

async fn identity(path: &PathBuf) -> Option<Identity> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some(Identity {
        dev: meta.dev(),
        ino: meta.ino(),
        ctime: meta.ctime(),
        ctime_nsec: meta.ctime_nsec(),
    })
}

/// Sends `()` each time a kubelet socket different from the one present at start appears.
/// The task ends when the receiver is dropped.
pub fn watch_kubelet_socket(path: PathBuf, interval: Duration) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut last = identity(&path).await;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = tx.closed() => return,
            }
            let now = identity(&path).await;
            if now.is_some() && now != last {
                tracing::info!(socket = %path.display(), "kubelet socket (re)created");
                // A full channel already holds a pending restart signal; one is enough.
                let _ = tx.try_send(());
            }
            last = now;
        }
    });
    rx
}
