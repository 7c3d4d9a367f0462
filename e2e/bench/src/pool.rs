//! The parent's side of the worker processes.
//!
//! One process may hold at most ~20k open files, so the parent re-executes its own binary as
//! `herald-bench worker` once per slice of connections, sends every worker the same
//! [`Command`] and waits for each one's [`Event`]. Children are killed if the pool is dropped.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::future::try_join_all;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::ipc::{Command, Event, WorkerSpec};

/// Time a worker gets to exit after `quit` before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

struct Worker {
    index: usize,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn write<T: serde::Serialize>(&mut self, msg: &T) -> Result<()> {
        let mut line = serde_json::to_vec(msg)?;
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .await
            .with_context(|| format!("worker {} stdin", self.index))?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn next_event(&mut self) -> Result<Event> {
        let line = self
            .lines
            .next_line()
            .await?
            .with_context(|| format!("worker {} exited unexpectedly", self.index))?;
        let event: Event = serde_json::from_str(&line)
            .with_context(|| format!("worker {} said {line:?}", self.index))?;
        if let Event::Failed { error } = &event {
            bail!("worker {} failed: {error}", self.index);
        }
        Ok(event)
    }
}

/// The running worker processes.
pub struct Pool {
    workers: Vec<Worker>,
}

impl Pool {
    /// Process ids of the running workers.
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.id()).collect()
    }

    /// Starts one worker per spec and waits until each has greeted.
    pub async fn spawn(specs: Vec<WorkerSpec>) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the herald-bench binary")?;
        let mut workers = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let mut worker = Worker {
                index: spec.index,
                child,
                stdin,
                lines: BufReader::new(stdout).lines(),
            };
            worker.write(&spec).await?;
            workers.push(worker);
        }
        let mut pool = Self { workers };
        for event in pool.gather().await? {
            if !matches!(event, Event::Hello) {
                bail!("unexpected first worker event {event:?}");
            }
        }
        Ok(pool)
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no workers.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Sends `command` to every worker and returns their answers in worker order.
    pub async fn ask(&mut self, command: &Command) -> Result<Vec<Event>> {
        for worker in &mut self.workers {
            worker.write(command).await?;
        }
        self.gather().await
    }

    async fn gather(&mut self) -> Result<Vec<Event>> {
        try_join_all(self.workers.iter_mut().map(Worker::next_event)).await
    }

    /// Tells every worker to quit and reaps it (killing stragglers).
    pub async fn shutdown(mut self) {
        for worker in &mut self.workers {
            let _ = worker.write(&Command::Quit).await;
        }
        for worker in &mut self.workers {
            if tokio::time::timeout(EXIT_GRACE, worker.child.wait())
                .await
                .is_err()
            {
                let _ = worker.child.kill().await;
            }
        }
    }
}
