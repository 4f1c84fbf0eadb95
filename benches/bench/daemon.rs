//! The failover daemon: how fast it notices a dead link and a healed one, what one state change
//! costs (time, processes), and its memory while it tracks links.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::Options;
use crate::addr::{SERVICE, link_device};
use crate::lbconfig::{Backend, Balance, ConfigFile, LbConfig};
use crate::measure::{self, ExecTrace, Invocation, Summary};
use crate::router::{Router, path_str};
use crate::topology::{Loss, Topology};

/// The link that fails and heals in every run (link 1 keeps the main table's default route).
const FAILING_LINK: usize = 2;
/// Links tracked while the daemon's memory is read.
const RSS_LINKS: usize = 4;
/// How often the memory is read.
const RSS_EVERY: Duration = Duration::from_secs(2);
/// Upper bound on any wait for a state in status.json.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Detection and recovery with one set of tracking options.
#[derive(Debug, Clone)]
pub struct Failover {
    pub setting: &'static str,
    /// From the ISP dropping everything to status.json saying the link is down (the daemon
    /// writes it after the rules changed, so new connections avoid the link by then).
    pub detection_s: Summary,
    /// From the ISP passing traffic again to status.json saying the link is up.
    pub recovery_s: Summary,
    /// What the daemon started for the link going down, and for it coming back (medians).
    pub down_change: ExecTrace,
    pub up_change: ExecTrace,
}

/// Everything measured on the daemon.
#[derive(Debug, Clone)]
pub struct DaemonFigures {
    pub failover: Vec<Failover>,
    pub rss_links: usize,
    /// VmRSS read every few seconds while tracking `rss_links` links.
    pub rss_kib: Summary,
    /// VmHWM at the end.
    pub peak_kib: u64,
}

/// Measures failover with the default tracking options and with a 0.5 s interval, then the
/// daemon's memory with four tracked links.
pub fn measure(options: &Options) -> DaemonFigures {
    let settings: [(&'static str, &[(&str, &str)]); 2] = [
        ("defaults", &[]),
        ("interval 0.5 s", &[("interval", "0.5")]),
    ];
    let failover = settings
        .iter()
        .filter(|(setting, _)| options.failover_defaults || *setting != "defaults")
        .map(|(setting, extra)| failover(options, setting, extra))
        .collect();
    let (rss_kib, peak_kib) = memory(options);
    DaemonFigures {
        failover,
        rss_links: RSS_LINKS,
        rss_kib,
        peak_kib,
    }
}

fn failover(options: &Options, setting: &'static str, extra: &[(&str, &str)]) -> Failover {
    let topo = Topology::new(2);
    let router = Router::new(&topo, &options.binary, &options.seed_script);
    let config = topo.write_config("tracked", &tracked(2, extra));
    let trace = topo.dir.path().join("daemon-strace.log");
    let mut detection = Vec::new();
    let mut recovery = Vec::new();
    let mut down_windows = Vec::new();
    let mut up_windows = Vec::new();
    {
        let mut daemon = Daemon::start(&topo, &options.binary, &config, Some(&trace));
        daemon.wait("every link up", |s| all_links(s, "up"));
        for _ in 0..options.runs {
            crate::check_interrupted();
            let lost_at = unix_now();
            let started = Instant::now();
            topo.add_loss(FAILING_LINK, Loss::All);
            daemon.wait("the link down", |s| link_state(s, FAILING_LINK) == "down");
            detection.push(started.elapsed().as_secs_f64());
            let down_at = unix_now();

            let healed_at = unix_now();
            let started = Instant::now();
            topo.clear_loss(FAILING_LINK);
            daemon.wait("the link up", |s| link_state(s, FAILING_LINK) == "up");
            recovery.push(started.elapsed().as_secs_f64());
            down_windows.push((lost_at, down_at));
            up_windows.push((healed_at, unix_now()));
        }
    }
    router.reset();
    let runs = measure::read_trace(&trace);
    let changes = |windows: &[(f64, f64)]| {
        let traces: Vec<ExecTrace> = windows
            .iter()
            .map(|&(from, to)| measure::execs_between(&runs, from, to))
            .collect();
        ExecTrace::median_of(&traces)
    };
    let figures = Failover {
        setting,
        detection_s: Summary::of(&detection),
        recovery_s: Summary::of(&recovery),
        down_change: changes(&down_windows),
        up_change: changes(&up_windows),
    };
    eprintln!(
        "bench: failover {setting}: detection {:.2} s, recovery {:.2} s, {} processes per change",
        figures.detection_s.median, figures.recovery_s.median, figures.down_change.processes
    );
    figures
}

/// VmRSS samples and the final VmHWM of a daemon tracking [`RSS_LINKS`] links.
fn memory(options: &Options) -> (Summary, u64) {
    let topo = Topology::new(RSS_LINKS);
    let router = Router::new(&topo, &options.binary, &options.seed_script);
    let config = topo.write_config("tracked", &tracked(RSS_LINKS, &[]));
    let (samples, peak) = {
        let mut daemon = Daemon::start(&topo, &options.binary, &config, None);
        daemon.wait("every link up", |s| all_links(s, "up"));
        let pid = daemon.pid();
        let mut samples = Vec::new();
        let until = Instant::now() + options.daemon_watch;
        while Instant::now() < until {
            crate::check_interrupted();
            std::thread::sleep(RSS_EVERY);
            samples.push(proc_status_kib(pid, "VmRSS") as f64);
        }
        daemon.wait("every link still up", |s| all_links(s, "up"));
        (samples, proc_status_kib(pid, "VmHWM"))
    };
    router.reset();
    let rss = Summary::of(&samples);
    eprintln!(
        "bench: daemon with {RSS_LINKS} links: VmRSS {:.0} KiB (median), VmHWM {peak} KiB",
        rss.median
    );
    (rss, peak)
}

/// `links` links of weight 1, each probing the server through its ISP, with `extra` options.
pub fn tracked(links: usize, extra: &[(&str, &str)]) -> LbConfig {
    let mut config = LbConfig::new(Backend::Nftables, Balance::RoundRobin, &vec![1; links]);
    for link in 1..=links {
        let section = link_device(link);
        config = config.with_option(&section, "track_ip", &SERVICE.to_string());
        for (option, value) in extra {
            config = config.with_option(&section, option, value);
        }
    }
    config
}

pub fn all_links(status: &Value, state: &str) -> bool {
    status["links"]
        .as_array()
        .is_some_and(|links| links.iter().all(|l| l["state"] == state))
}

pub fn link_state(status: &Value, link: usize) -> String {
    status["links"][link - 1]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}

/// `connmark-lb run` in the router (under strace when asked), stopped with SIGTERM when dropped.
pub struct Daemon {
    child: Child,
    pub status: PathBuf,
    log: PathBuf,
    events: PathBuf,
}

impl Daemon {
    pub fn start(
        topo: &Topology,
        binary: &Path,
        config: &ConfigFile,
        trace: Option<&Path>,
    ) -> Daemon {
        let dir = topo.dir.path().join("daemon");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let state_dir = topo.state_dir();
        // No event script: a hook the host happens to have must not run.
        let no_hook = dir.join("no-hook");
        let invocation = Invocation::new(
            binary,
            &[
                "run",
                config.flag(),
                config.path_str(),
                "--state-dir",
                path_str(&state_dir),
                "--hook",
                path_str(&no_hook),
            ],
            &dir,
        );
        let invocation = match trace {
            Some(trace) => invocation.under_strace(trace),
            None => invocation,
        };
        let mut daemon = Daemon {
            child: measure::spawn(&topo.router, &invocation),
            status: state_dir.join("status.json"),
            log: dir.join("stderr"),
            events: dir.join("stdout"),
        };
        daemon.wait("the first status.json", |_| true);
        daemon
    }

    fn status(&self) -> Option<Value> {
        let text = std::fs::read_to_string(&self.status).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Polls status.json every 5 ms until `done` holds (bounded by [`STATE_TIMEOUT`]).
    pub fn wait(&mut self, what: &str, done: impl Fn(&Value) -> bool) {
        let started = Instant::now();
        loop {
            if self.status().is_some_and(|s| done(&s)) {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!(
                    "the daemon exited ({exit}) waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < STATE_TIMEOUT,
                "no {what} after {STATE_TIMEOUT:?}; status {:?}\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The daemon's own pid (under strace the child is strace).
    pub fn pid(&self) -> u32 {
        self.status()
            .and_then(|s| s["pid"].as_u64())
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or_else(|| panic!("no pid in {}", self.status.display()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the daemon reported on stdout (state changes and the like) so far.
    pub fn events(&self) -> String {
        std::fs::read_to_string(&self.events).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = self.status().and_then(|s| s["pid"].as_i64()) {
                // SAFETY: plain kill(2); the pid is the daemon, which is our descendant.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
