//! [`RunOptions`] with defaults and a builder, and the reference client as an in-process
//! client, so catalogue cases run inside a Rust program (or `cargo test`) without a
//! client process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::adapter::{BoxFuture, Client, InProcessClient, InProcessSession};
use super::agent::AgentLauncher;
use super::case::{RunOptions, DEFAULT_MAX_RSS_KIB};
use super::mock::MockLauncher;
use crate::internals::ReferenceInProcess;

impl Default for RunOptions {
    /// The reference client in-process, on the mock, one case at a time, seed 0, the
    /// default memory bound, no artifacts, times as written.
    fn default() -> Self {
        RunOptions {
            client: Client::InProcess(Arc::new(ReferenceClient::default())),
            launcher: Arc::new(MockLauncher::default()),
            jobs: 1,
            seed: 0,
            max_rss_kib: DEFAULT_MAX_RSS_KIB,
            artifacts: None,
            time_scale: 1,
        }
    }
}

impl RunOptions {
    /// Starts from [`RunOptions::default`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use qga_harness::runner::{self, RunOptions, Verdict};
    ///
    /// // Arrange: two catalogue cases, the reference client in-process.
    /// let files = runner::scenario_files(&["scenarios".into()])?;
    /// let cases = runner::filter_cases(runner::load_cases(&files)?, &["sync.1".into(), "sync.2".into()]);
    /// let options = RunOptions::builder().jobs(2).seed(42).build();
    ///
    /// // Act
    /// let results = runner::run_all(cases, &options, |_, _| {}).await;
    ///
    /// // Assert
    /// assert!(!results.is_empty());
    /// assert!(results.iter().all(|r| r.verdict == Verdict::Pass), "{results:#?}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> RunOptionsBuilder {
        RunOptionsBuilder {
            options: RunOptions::default(),
        }
    }
}

/// Builds [`RunOptions`].
#[must_use = "a RunOptionsBuilder does nothing until it is built and given to the runner"]
#[derive(Clone)]
pub struct RunOptionsBuilder {
    options: RunOptions,
}

impl std::fmt::Debug for RunOptionsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptionsBuilder")
            .field("client", &self.options.client)
            .field("jobs", &self.options.jobs)
            .field("seed", &self.options.seed)
            .finish_non_exhaustive()
    }
}

impl RunOptionsBuilder {
    /// The client under test (default: the reference client, in-process).
    pub fn client(mut self, client: Client) -> Self {
        self.options.client = client;
        self
    }

    /// A client of your own, in this process.
    pub fn in_process(self, client: impl InProcessClient + 'static) -> Self {
        self.client(Client::InProcess(Arc::new(client)))
    }

    /// Where each case's agent runs (default: the mock).
    pub fn launcher(mut self, launcher: Arc<dyn AgentLauncher>) -> Self {
        self.options.launcher = launcher;
        self
    }

    /// Cases run at the same time (at least 1; default 1).
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.options.jobs = jobs.max(1);
        self
    }

    /// The run's seed (default 0): each case's agent gets a seed derived from it.
    pub fn seed(mut self, seed: u64) -> Self {
        self.options.seed = seed;
        self
    }

    /// The bounded-memory duty's limit on a client process's peak RSS, in KiB.
    pub fn max_rss_kib(mut self, kib: u64) -> Self {
        self.options.max_rss_kib = kib;
        self
    }

    /// Keeps each case's transcript and client log under `dir`.
    pub fn artifacts(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.artifacts = Some(dir.into());
        self
    }

    /// Multiplies every timeout, delay and time bound of the cases (at least 1; default 1,
    /// as written): for a slow or loaded machine.
    pub fn time_scale(mut self, factor: u64) -> Self {
        self.options.time_scale = factor.max(1);
        self
    }

    /// The options.
    pub fn build(self) -> RunOptions {
        self.options
    }
}

/// The reference client ([`crate::client::Client`]) as an in-process client: one client
/// per case, its default timeout replaced by each step's.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceClient {
    inner: ReferenceInProcess,
}

impl InProcessClient for ReferenceClient {
    fn name(&self) -> String {
        "the reference client (in-process)".into()
    }

    fn open<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Box<dyn InProcessSession>> {
        self.inner.open(socket)
    }
}
