//! The `ringway` binary run as a child process (for what an in-process proxy cannot show:
//! its log lines, its environment), with its stderr lines on a channel.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Ringway {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    pub seen: Vec<String>,
}

impl Ringway {
    /// Starts `ringway --config CONFIG` with `env` added to the environment.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Ringway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
        cmd.args(["--config", config.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ringway");
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ringway {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first stderr line (from now on) that `pred` accepts, waiting up to `limit`.
    pub fn wait_line(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            self.seen.push(line.clone());
            if pred(&line) {
                return Some(line);
            }
        }
        None
    }

    /// Waits for the startup line and returns the address of listener `name`.
    pub fn listener(&mut self, name: &str) -> SocketAddr {
        let key = format!("{name}=");
        let find = |line: &str| -> Option<SocketAddr> {
            line.split_whitespace().find_map(|w| {
                w.trim_matches('"')
                    .split(key.as_str())
                    .nth(1)
                    // Text lines end the value at a space, JSON lines at a quote.
                    .and_then(|a| a.split(['"', ',']).next()?.parse().ok())
            })
        };
        match self.wait_line(Duration::from_secs(10), |l| find(l).is_some()) {
            Some(line) => find(&line).unwrap(),
            None => panic!("ringway never logged listener {name}: {:#?}", self.seen),
        }
    }
}

impl Ringway {
    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits up to `limit` for the process to exit; kills it and fails otherwise.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.drain();
                panic!(
                    "ringway did not exit within {limit:?}; stderr: {:#?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Moves every stderr line already written into `seen`.
    pub fn drain(&mut self) {
        self.seen.extend(self.lines.try_iter());
    }
}

impl Drop for Ringway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
