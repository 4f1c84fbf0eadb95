//! `connmark-lb run` as the tests start it: in the router of a [`Topology`], its events and
//! errors in one log, watched through status.json; and the detection and recovery bounds a
//! health configuration promises ([`Timing`]).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use super::topology::Topology;

/// How long the daemon may take to write its first status.json.
const FIRST_STATUS: Duration = Duration::from_secs(10);

/// What measured detection and recovery times may exceed the configured bound by: rule
/// update, connection spacing and scheduling on a busy machine.
pub const SLACK: Duration = Duration::from_millis(500);

/// `connmark-lb run` inside the router; stopped (SIGTERM, then SIGKILL) when dropped, and its
/// log printed when the test fails.
pub struct Daemon {
    /// Behind a lock so that waiting needs only `&self`: a test keeps borrowing the topology
    /// of its lab while it waits for the daemon.
    child: Mutex<Child>,
    log: PathBuf,
    status: PathBuf,
}

impl Daemon {
    /// Starts `command` (a `connmark-lb run` from [`Topology::lb_command`]) with stdout and
    /// stderr in `log`, without waiting for anything.
    pub fn spawn(topo: &Topology, mut command: Command, log: PathBuf) -> Daemon {
        let file = File::create(&log).expect("daemon log file");
        let child = command
            .stdin(Stdio::null())
            // Events go to stdout, errors to stderr: the log holds both, in order.
            .stdout(file.try_clone().expect("daemon log file"))
            .stderr(file)
            .spawn()
            .expect("start connmark-lb run");
        Daemon {
            child: Mutex::new(child),
            log,
            status: topo.state_dir().join("status.json"),
        }
    }

    /// Like [`Daemon::spawn`], then waits until the daemon has written its first status.
    pub fn start(topo: &Topology, command: Command, log: PathBuf) -> Daemon {
        let daemon = Daemon::spawn(topo, command, log);
        daemon.wait_for("the first status.json", FIRST_STATUS, |_| true);
        daemon
    }

    /// The parsed status.json, if it is there.
    pub fn status(&self) -> Option<Value> {
        let text = std::fs::read_to_string(&self.status).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The status entry of link `link` (1-based).
    pub fn link(&self, link: usize) -> Value {
        let status = self.status().expect("status.json");
        status["links"][link - 1].clone()
    }

    /// Polls status.json every 10 ms until `done` holds; fails when the daemon exits or
    /// `timeout` passes. Returns how long it took.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            if let Some(status) = self.status() {
                if done(&status) {
                    return started.elapsed();
                }
            }
            if let Ok(Some(exit)) = self.child().try_wait() {
                panic!(
                    "daemon exited with {exit} waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; status {:?}\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until every link reports `state` and, if it is tracked, answered probes in its
    /// last round (when `state` is up) or lost them all (when down).
    pub fn wait_all(&self, state: &str, timeout: Duration) -> Duration {
        let loss = if state == "up" { 0 } else { 100 };
        self.wait_for(&format!("every link {state}"), timeout, |s| {
            s["links"].as_array().is_some_and(|links| {
                links.iter().all(|l| {
                    l["state"] == state && (l["tracked"] == false || l["loss_percent"] == loss)
                })
            })
        })
    }

    /// Waits until link `link` reports `state`.
    pub fn wait_link(&self, link: usize, state: &str, timeout: Duration) -> Duration {
        self.wait_for(&format!("link {link} {state}"), timeout, |s| {
            s["links"][link - 1]["state"] == state
        })
    }

    /// The pid status.json reports.
    pub fn pid(&self) -> Pid {
        let status = self.status().expect("status.json");
        let pid = status["pid"].as_i64().expect("pid in status.json");
        Pid::from_raw(i32::try_from(pid).expect("pid fits"))
    }

    /// The pid of the process started, which is the daemon's own: `ip netns exec` execs it.
    pub fn child_pid(&self) -> u32 {
        self.child().id()
    }

    /// The process started, for a test that kills or reaps it itself.
    pub fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal the daemon");
    }

    /// Waits (bounded) for the daemon to exit.
    pub fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.child().try_wait().expect("wait for the daemon") {
                return exit;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) until the log holds `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the log never said {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asserts the log holds every one of `lines`, showing the log when one is missing.
    pub fn assert_logged(&self, lines: &[&str]) {
        let log = self.log();
        for line in lines {
            assert!(log.contains(line), "log lacks {line:?}:\n{log}");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Ok(None) = child.try_wait() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("=== daemon log:\n{}", self.log());
        }
    }
}

/// The health options of one measured configuration and the bounds they promise (see
/// src/daemon/health.rs).
pub struct Timing {
    pub interval: Duration,
    pub failure_interval: Duration,
    pub timeout: Duration,
    pub down: u32,
    pub up: u32,
}

impl Timing {
    /// The defaults but for `interval`, which the probe timeout follows.
    pub fn with_interval(interval: Duration) -> Timing {
        Timing {
            interval,
            failure_interval: Duration::from_millis(300),
            timeout: interval,
            down: 3,
            up: 5,
        }
    }

    /// A failing round waits 0.3 s here (three round trips are far less).
    pub fn detection_bound(&self) -> Duration {
        let failing = self.failure_interval.max(Duration::from_millis(300));
        self.interval + self.timeout + failing * (self.down - 1)
    }

    /// Without the round trip time, which is well under a millisecond here.
    pub fn recovery_bound(&self) -> Duration {
        self.interval.max(self.timeout) + self.interval * (self.up - 1)
    }

    /// Asserts a measured detection of `what` kept its bound, give or take [`SLACK`].
    pub fn assert_detection(&self, what: &str, detection: Duration) {
        assert!(
            detection <= self.detection_bound() + SLACK,
            "{what}: detection took {detection:?}"
        );
    }

    /// Asserts a measured recovery of `what` kept its bound, give or take [`SLACK`].
    pub fn assert_recovery(&self, what: &str, recovery: Duration) {
        assert!(
            recovery <= self.recovery_bound() + SLACK,
            "{what}: recovery took {recovery:?}"
        );
    }
}
