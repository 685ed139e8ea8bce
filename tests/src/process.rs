//! Our binaries, run as child processes of the test; stopped when dropped.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Folder of the built binaries: `KUBESCHED_E2E_BIN_DIR`, else the cargo profile folder
/// this test executable was built into (`target/<profile>`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KUBESCHED_E2E_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test executable>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("the test executable is not in a cargo target folder")
}

/// Path of one of our binaries, e.g. `kubesched-agent`, with a clear error when it is not built.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build it first (`cargo test --workspace --no-run`, same profile as the \
         tests) or set KUBESCHED_E2E_BIN_DIR",
        path.display()
    );
    Ok(path)
}

/// A child process with its output in a log file.
pub struct Proc {
    name: String,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin` with `args` and extra `envs`; stdout and stderr go to `log`.
    pub fn spawn<I, S>(
        name: &str,
        bin: &Path,
        args: I,
        envs: &[(&str, &OsStr)],
        log: &Path,
    ) -> anyhow::Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log handle")?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        eprintln!(
            "[e2e] started {name} (pid {}), log {}",
            child.id(),
            log.display()
        );
        Ok(Proc {
            name: name.to_string(),
            child: Mutex::new(Some(child)),
            log: log.to_path_buf(),
        })
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock leaves the child as it was: keep using it.
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The process's OS id, or `None` once it has been stopped or killed.
    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// Still running (not exited)?
    pub fn is_running(&self) -> bool {
        match self.child().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Fails with the log's tail if the process has exited.
    pub fn ensure_running(&self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        anyhow::bail!(
            "{} exited; last log lines:\n{}",
            self.name,
            self.log_tail(30)
        )
    }

    /// Path of the log file that holds the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILL at once (a crash: no clean-up in the process), and reaps it.
    pub fn kill(&self) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("[e2e] killed {} (SIGKILL)", self.name);
    }

    /// SIGTERM, then SIGKILL after five seconds.
    pub fn stop(&self) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
        eprintln!("[e2e] stopped {}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
