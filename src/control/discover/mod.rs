//! Dynamic upstreams: DNS names (`dynamic.a`, `dynamic.srv`, and hostnames among `targets`)
//! resolved again and again on one control thread of their own, never on a worker.
//!
//! The thread runs hickory-resolver on a current-thread tokio runtime that nothing else uses.
//! Each query keeps its last good answer; when the answers change, the whole set goes to the
//! control side (`sink`), which merges it into the configuration and swaps the result into
//! every worker like a reload (unchanged targets keep their state and pooled connections).
//! A failed lookup keeps the last good answer, is logged once per change of state, counted,
//! and retried soon.

pub mod dns;
pub mod merge;
pub mod stats;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use merge::{Discovered, Job};
use stats::{DnsStats, QueryState};

/// Receives every changed set of answers (on the discovery thread).
pub type Sink = Box<dyn FnMut(Discovered) + Send>;

enum Msg {
    /// The configuration changed: these are the queries now.
    Jobs(Vec<Job>),
}

/// The running discovery thread. Dropping it ends the thread (it is not waited for: it may be
/// waiting for the control lock that whoever drops it holds).
pub struct Discoverer {
    tx: mpsc::Sender<Msg>,
}

impl Discoverer {
    /// Starts the thread with `jobs`; the receiver hears once when the first round is over
    /// (answers handed to `sink`, or failed).
    pub fn start(
        jobs: Vec<Job>,
        sink: Sink,
        stats: Arc<DnsStats>,
    ) -> io::Result<(Discoverer, mpsc::Receiver<()>)> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("ringway-dns".into())
            .spawn(move || {
                let mut state = State {
                    runtime,
                    resolvers: HashMap::new(),
                    queries: Vec::new(),
                    found: Discovered::new(),
                    sink,
                    stats,
                };
                state.set_jobs(jobs);
                state.run(&rx, ready_tx);
            })?;
        Ok((Discoverer { tx }, ready))
    }

    /// Follows a new configuration: queries that stayed keep their answers and schedule.
    pub fn set_jobs(&self, jobs: Vec<Job>) {
        let _ = self.tx.send(Msg::Jobs(jobs));
    }
}

/// One query's schedule and health.
struct Scheduled {
    job: Job,
    due: Instant,
    /// The reason of the failure now going on (logged when it starts and when it changes).
    failing: Option<&'static str>,
}

struct State {
    runtime: tokio::runtime::Runtime,
    /// By resolver list (empty: the system's); an error when that one cannot be built.
    resolvers: HashMap<Vec<SocketAddr>, Result<hickory_resolver::TokioResolver, String>>,
    queries: Vec<Scheduled>,
    found: Discovered,
    sink: Sink,
    stats: Arc<DnsStats>,
}

impl State {
    fn run(&mut self, rx: &mpsc::Receiver<Msg>, ready: mpsc::Sender<()>) {
        let mut ready = Some(ready);
        loop {
            self.round();
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
            let next = self.queries.iter().map(|q| q.due).min();
            let msg = match next {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Jobs(jobs)) => self.set_jobs(jobs),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn set_jobs(&mut self, jobs: Vec<Job>) {
        let mut old = std::mem::take(&mut self.queries);
        for job in jobs {
            let kept = old.iter().position(|q| q.job == job);
            self.queries.push(match kept {
                Some(i) => old.swap_remove(i),
                None => Scheduled {
                    job,
                    due: Instant::now(),
                    failing: None,
                },
            });
        }
        let queries = &self.queries;
        let asked = |u: &str, q: &merge::Query| {
            queries
                .iter()
                .any(|s| s.job.upstream == u && &s.job.query == q)
        };
        let before = self.found.len();
        self.found.retain(|(u, q), _| asked(u, q));
        self.stats.retain(|u, n| {
            queries
                .iter()
                .any(|s| s.job.upstream == u && label(&s.job.query) == n)
        });
        if self.found.len() != before {
            (self.sink)(self.found.clone());
        }
    }

    /// Runs every query that is due, all at once; hands a changed set to the sink.
    fn round(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.queries.len())
            .filter(|&i| self.queries[i].due <= now)
            .collect();
        if due.is_empty() {
            return;
        }
        let _enter = self.runtime.enter();
        let mut tasks = Vec::with_capacity(due.len());
        for &i in &due {
            let job = &self.queries[i].job;
            let resolver = self
                .resolvers
                .entry(job.resolvers.clone())
                .or_insert_with(|| dns::resolver(&job.resolvers))
                .clone();
            let query = job.query.clone();
            tasks.push(self.runtime.spawn(async move {
                match resolver {
                    Ok(r) => dns::lookup(&r, &query).await,
                    Err(message) => Err(dns::Failure {
                        reason: "error",
                        message,
                    }),
                }
            }));
        }
        let mut changed = false;
        for (i, task) in due.into_iter().zip(tasks) {
            let result = self.runtime.block_on(task).unwrap_or_else(|e| {
                Err(dns::Failure {
                    reason: "error",
                    message: e.to_string(),
                })
            });
            changed |= self.record(i, result);
        }
        if changed {
            (self.sink)(self.found.clone());
        }
    }

    /// Folds one lookup's outcome in; true when the set of answers changed.
    fn record(
        &mut self,
        i: usize,
        result: Result<(Vec<merge::Found>, Duration), dns::Failure>,
    ) -> bool {
        let q = &mut self.queries[i];
        let (upstream, name) = (q.job.upstream.clone(), label(&q.job.query));
        let key = (upstream.clone(), q.job.query.clone());
        match result {
            Ok((found, ttl)) => {
                if q.failing.take().is_some() {
                    tracing::info!(upstream = %upstream, name = %name, "DNS lookup works again");
                }
                q.due = Instant::now() + merge::next_after_success(q.job.refresh, ttl);
                let state = QueryState {
                    kind: q.job.query.kind(),
                    failing: None,
                    addresses: found.len(),
                };
                self.stats.set_state(&upstream, &name, state);
                if self.found.get(&key) == Some(&found) {
                    return false;
                }
                tracing::info!(
                    upstream = %upstream, name = %name,
                    "DNS: {} address(es): {}", found.len(),
                    found.iter().map(|f| f.addr.to_string()).collect::<Vec<_>>().join(" ")
                );
                self.found.insert(key, found);
                true
            }
            Err(f) => {
                self.stats.failed(&upstream, &name, f.reason);
                if q.failing != Some(f.reason) {
                    tracing::warn!(
                        upstream = %upstream, name = %name, reason = f.reason,
                        "DNS lookup failed, the last good addresses stay: {}", f.message
                    );
                }
                q.failing = Some(f.reason);
                q.due = Instant::now() + merge::next_after_failure(q.job.refresh);
                let addresses = self.found.get(&key).map_or(0, Vec::len);
                let state = QueryState {
                    kind: q.job.query.kind(),
                    failing: Some(format!("{}: {}", f.reason, f.message)),
                    addresses,
                };
                self.stats.set_state(&upstream, &name, state);
                false
            }
        }
    }
}

/// How metrics and the admin endpoint name a query: the name, and the port where it has one.
pub fn label(q: &merge::Query) -> String {
    match q {
        merge::Query::Host { name, port } | merge::Query::A { name, port } => {
            format!("{name}:{port}")
        }
        merge::Query::Srv { name } => name.clone(),
    }
}
