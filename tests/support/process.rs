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
                    .and_then(|a| a.trim_end_matches(['"', ',']).parse().ok())
            })
        };
        match self.wait_line(Duration::from_secs(10), |l| find(l).is_some()) {
            Some(line) => find(&line).unwrap(),
            None => panic!("ringway never logged listener {name}: {:#?}", self.seen),
        }
    }
}

impl Drop for Ringway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
