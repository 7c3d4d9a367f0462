//! One way to run a fixture's child process.
//!
//! Every fixture (etcd and the Kubernetes control plane, Redis, nginx, Chromium, Jaeger, the
//! operator and Herald nodes) starts a real binary and needs the same few things: its output kept
//! somewhere for error messages, a check that it is still running, a bounded wait for a line or
//! an exit, signals, and a stop that cannot leave anything behind, also when a test panics. This
//! module does those once; the fixtures keep only what is theirs (ports, readiness probes).
//!
//! - Output goes to a log file ([`Spawn::log`], appended to, so restarts share one file) or, for
//!   processes that announce themselves on standard output, to a line channel that also keeps
//!   the last [`RECENT_LINES`] lines ([`Spawn::stdout_lines`]).
//! - [`Spawn::own_group`] puts the process in its own process group, so a stop reaches helpers
//!   it started (nginx workers, Chromium renderers).
//! - [`Spawn::grace`] makes the stop polite: SIGTERM, up to the grace period, then SIGKILL;
//!   without it a stop is SIGKILL at once. Either way the process is reaped, and dropping a
//!   [`Process`] stops it.
//! - Failures a caller acts on (a binary that is not installed, a process that died) are a
//!   [`ProcessError`] to match on rather than text to search.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use parking_lot::Mutex;

/// Standard-output lines kept for [`Process::log_tail`] when output goes to a line channel.
pub const RECENT_LINES: usize = 200;
/// Pause between two checks while waiting for an exit.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// Why a [`Process`] could not be started or is not running.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The log file could not be opened.
    #[error("could not open {}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The program could not be started (`source.kind()` is `NotFound` when it is not
    /// installed).
    #[error("could not start {name} ({})", program.display())]
    Spawn {
        /// The process's name in messages.
        name: String,
        /// The program.
        program: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The process could not be checked on.
    #[error("could not check on {name}")]
    Wait {
        /// The process's name in messages.
        name: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The process exited (or was reaped) while it was expected to run.
    #[error("{name} exited with {status} while {doing}{log}")]
    Exited {
        /// The process's name in messages.
        name: String,
        /// How it ended.
        status: ExitStatus,
        /// What the fixture was doing.
        doing: String,
        /// The tail of its output.
        log: String,
    },
}

/// How to start a [`Process`]: the command plus where its output goes and how it stops.
#[must_use]
pub struct Spawn {
    name: String,
    command: Command,
    log: Option<PathBuf>,
    stdout_lines: bool,
    own_group: bool,
    grace: Option<Duration>,
}

impl Spawn {
    /// `command`, called `name` in messages. Its standard input is closed; its output stays as
    /// the command sets it unless [`Self::log`] or [`Self::stdout_lines`] redirect it.
    pub fn new(name: impl Into<String>, command: Command) -> Self {
        Self {
            name: name.into(),
            command,
            log: None,
            stdout_lines: false,
            own_group: false,
            grace: None,
        }
    }

    /// Appends standard output and error to `path`.
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Pipes standard output into [`Process::next_line_with`] (standard error stays as set).
    pub fn stdout_lines(mut self) -> Self {
        self.stdout_lines = true;
        self
    }

    /// Starts the process as the leader of a new process group, which a stop kills as a whole.
    pub fn own_group(mut self) -> Self {
        self.own_group = true;
        self
    }

    /// Stops with SIGTERM first and SIGKILL after `grace` (default: SIGKILL at once).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// Starts it.
    pub fn spawn(mut self) -> Result<Process, ProcessError> {
        let program = PathBuf::from(self.command.get_program());
        self.command.stdin(Stdio::null());
        if let Some(path) = &self.log {
            let (out, err) = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|log| Ok((log.try_clone()?, log)))
                .map_err(|source| ProcessError::Log {
                    path: path.clone(),
                    source,
                })?;
            self.command.stdout(out).stderr(err);
        }
        if self.stdout_lines {
            self.command.stdout(Stdio::piped());
        }
        if self.own_group {
            self.command.process_group(0);
        }
        let mut child = self.command.spawn().map_err(|source| ProcessError::Spawn {
            name: self.name.clone(),
            program,
            source,
        })?;
        let recent = Arc::new(Mutex::new(VecDeque::new()));
        let lines = match child.stdout.take() {
            Some(stdout) if self.stdout_lines => Some(forward_lines(stdout, recent.clone())),
            Some(stdout) => {
                child.stdout = Some(stdout);
                None
            }
            None => None,
        };
        Ok(Process {
            name: self.name,
            id: child.id(),
            child: Some(child),
            status: None,
            log: self.log,
            recent,
            lines: lines.map(Mutex::new),
            own_group: self.own_group,
            grace: self.grace,
        })
    }
}

/// Reads `stdout` line by line on a thread: into the returned channel and the `recent` ring.
fn forward_lines(
    stdout: std::process::ChildStdout,
    recent: Arc<Mutex<VecDeque<String>>>,
) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            {
                let mut recent = recent.lock();
                if recent.len() == RECENT_LINES {
                    recent.pop_front();
                }
                recent.push_back(line.clone());
            }
            // A receiver that is gone (taken and dropped) only ends the forwarding, not the
            // reading: the process must never block on a full pipe.
            let _ = tx.send(line);
        }
    });
    rx
}

/// A running (or exited) child process; see the module documentation. Dropping it stops it.
#[derive(Debug)]
pub struct Process {
    name: String,
    id: u32,
    child: Option<Child>,
    /// How it ended, once reaped.
    status: Option<ExitStatus>,
    log: Option<PathBuf>,
    recent: Arc<Mutex<VecDeque<String>>>,
    lines: Option<Mutex<Receiver<String>>>,
    own_group: bool,
    grace: Option<Duration>,
}

impl Process {
    /// The name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id, also after it was reaped (see [`Self::pid`]).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Process id while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file, when output goes to one.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Its exit status if it has exited (then it is reaped and [`Self::pid`] is `None`).
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(self.status);
        };
        let status = child.try_wait().map_err(|source| ProcessError::Wait {
            name: self.name.clone(),
            source,
        })?;
        if status.is_some() {
            self.child = None;
            self.status = status;
        }
        Ok(status)
    }

    /// Fails with the log tail when it has exited.
    pub fn check_running(&mut self, doing: &str, tail_lines: usize) -> Result<(), ProcessError> {
        match self.try_exit()? {
            Some(status) => Err(ProcessError::Exited {
                name: self.name.clone(),
                status,
                doing: doing.to_owned(),
                log: self.log_tail(tail_lines),
            }),
            None => Ok(()),
        }
    }

    /// Waits up to `limit` for it to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let Some(child) = self.child.as_mut() else {
                return self.status;
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                self.status = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// The first standard-output line within `limit` that contains `needle` (earlier lines are
    /// consumed). `None` on timeout, at end of output, or without [`Spawn::stdout_lines`].
    pub fn next_line_with(&self, needle: &str, limit: Duration) -> Option<String> {
        let lines = self.lines.as_ref()?.lock();
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Hands the standard-output line channel to the caller (once).
    pub fn take_lines(&mut self) -> Option<Receiver<String>> {
        self.lines.take().map(Mutex::into_inner)
    }

    /// Sends `SIG<signal>` (`TERM`, `HUP`, `STOP`, ...) to the process itself.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            bail!("{} is not running{}", self.name, self.log_tail(15));
        };
        send_signal(signal, &pid.to_string())
    }

    /// SIGKILLs it (and its group, with [`Spawn::own_group`]) and reaps it.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.own_group {
            let _ = send_signal("KILL", &format!("-{}", child.id()));
        }
        let _ = child.kill();
        self.status = child.wait().ok();
    }

    /// Stops it as configured: SIGTERM and up to the grace period first when [`Spawn::grace`]
    /// was set, then [`Self::kill`].
    pub fn stop(&mut self) {
        if let (Some(grace), Some(pid)) = (self.grace, self.pid()) {
            let _ = send_signal("TERM", &pid.to_string());
            let _ = self.wait_exit(grace);
            if self.child.is_none() && self.own_group {
                // The leader is gone; its group may not be.
                let _ = send_signal("KILL", &format!("-{pid}"));
            }
        }
        self.kill();
    }

    /// Appends a line of the fixture's own to the log, so restarts and reloads show in it.
    pub fn note(&self, what: &str) {
        if let Some(path) = &self.log {
            if let Ok(mut log) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(log, "===== herald fixture: {what} =====");
            }
        }
    }

    /// The non-blank lines of its output so far (the log file, or the last standard-output
    /// lines).
    pub fn log_lines(&self) -> Vec<String> {
        match &self.log {
            Some(path) => file_lines(path),
            None => self.recent.lock().iter().cloned().collect(),
        }
    }

    /// The last `n` lines of its output under a heading, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        match &self.log {
            Some(path) => tail_file(path, n),
            None => format_tail(
                &format!("{} standard output", self.name),
                &self.log_lines(),
                n,
            ),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `kill -SIG<signal> -- <target>` (a pid, or `-pgid` for a group).
pub fn send_signal(signal: &str, target: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), "--".to_owned(), target.to_owned()])
        .stderr(Stdio::null())
        .status()
        .context("could not run kill")?;
    if !status.success() {
        bail!("kill -{signal} {target} failed ({status})");
    }
    Ok(())
}

/// The non-blank lines of a file (none when it cannot be read).
pub fn file_lines(path: &Path) -> Vec<String> {
    let text = fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The last `n` non-blank lines of a file, headed by its path, for error messages.
pub fn tail_file(path: &Path, n: usize) -> String {
    format_tail(&path.display().to_string(), &file_lines(path), n)
}

fn format_tail(source: &str, lines: &[String], n: usize) -> String {
    if lines.is_empty() {
        return format!("\n--- {source} is empty ---");
    }
    let mut out = format!("\n--- last lines of {source} ---");
    for line in &lines[lines.len().saturating_sub(n)..] {
        out.push_str("\n  ");
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn logs_to_a_file_and_tails_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let mut p = Spawn::new(
            "printer",
            shell("echo one; echo 'two \"🦀\"' >&2; echo; echo three"),
        )
        .log(&log)
        .spawn()
        .unwrap();
        assert!(p.wait_exit(Duration::from_secs(10)).unwrap().success());
        assert_eq!(p.log_lines(), ["one", "two \"🦀\"", "three"]);
        let tail = p.log_tail(2);
        assert!(tail.contains("last lines of") && tail.ends_with("\n  two \"🦀\"\n  three"));
        assert!(p.pid().is_none());
        assert!(
            p.signal("TERM").is_err(),
            "a reaped process takes no signals"
        );
    }

    #[test]
    fn finds_stdout_lines_and_keeps_the_recent_ones() {
        let p = Spawn::new(
            "announcer",
            shell("echo noise; echo 'listening on 127.0.0.1:9'; sleep 30"),
        )
        .stdout_lines()
        .spawn()
        .unwrap();
        let line = p
            .next_line_with("listening on", Duration::from_secs(10))
            .unwrap();
        assert_eq!(line, "listening on 127.0.0.1:9");
        assert_eq!(p.log_lines(), ["noise", "listening on 127.0.0.1:9"]);
        assert!(p
            .next_line_with("never", Duration::from_millis(50))
            .is_none());
    }

    #[test]
    fn reports_an_early_exit_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Spawn::new("failing", shell("echo 'bad flag --x'; exit 3"))
            .log(dir.path().join("log"))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            if let Err(e) = p.check_running("starting", 5) {
                break e;
            }
            assert!(Instant::now() < deadline, "sh did not exit");
            std::thread::sleep(EXIT_POLL);
        };
        let ProcessError::Exited { status, log, .. } = &err else {
            panic!("not an exit: {err:?}");
        };
        assert_eq!(status.code(), Some(3));
        assert!(log.contains("bad flag --x"), "{log}");
        let text = err.to_string();
        assert!(
            text.contains("failing exited with exit status: 3 while starting"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_program_is_a_matchable_error() {
        let err = Spawn::new("ghost", Command::new("/nonexistent/herald-\"ghost\" 🦀"))
            .spawn()
            .unwrap_err();
        match &err {
            ProcessError::Spawn { name, source, .. } => {
                assert_eq!(name, "ghost");
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("not a spawn error: {other:?}"),
        }
        assert!(
            err.to_string().starts_with("could not start ghost ("),
            "{err}"
        );
    }

    #[test]
    fn stop_reaches_the_whole_group() {
        // The shell ignores TERM and leaves a grandchild that would outlive a plain kill.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let script = format!(
            "trap '' TERM; sleep 300 & echo $! > '{}'; wait",
            pidfile.display()
        );
        let mut p = Spawn::new("group", shell(&script))
            .own_group()
            .grace(Duration::from_millis(200))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let grandchild = loop {
            if let Ok(pid) = fs::read_to_string(&pidfile) {
                if let Ok(pid) = pid.trim().parse::<u32>() {
                    break pid;
                }
            }
            assert!(Instant::now() < deadline, "no grandchild pid");
            std::thread::sleep(EXIT_POLL);
        };
        let started = Instant::now();
        p.stop();
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "TERM was ignored: grace used"
        );
        assert!(p.pid().is_none());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{grandchild}")).exists()
            && !fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .is_ok_and(|s| s.contains(") Z"))
        {
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived the stop"
            );
            std::thread::sleep(EXIT_POLL);
        }
    }
}
