//! The user's event script (`/etc/connmark-lb.user`, like mwan3's `mwan3.user`): run on every
//! change of a link's usability, without ever making the daemon wait for it.
//!
//! The script is run by `/bin/sh`, so it needs no execute bit, with `ACTION`
//! (`connected`|`disconnected`), `INTERFACE` and `DEVICE` in its environment and the interface
//! name and the new state (`up`|`down`) as arguments. Children are reaped when they exit.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// At most this many scripts run at once; an event beyond that waits in a queue (and is
/// logged), so a script that hangs cannot pile up processes on a flapping link.
const MAX_RUNNING: usize = 16;

/// How long one run may take before it is killed (with everything it started), so stuck runs
/// cannot hold the slots forever and every later event, the final state included, still runs.
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What one script run is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEvent {
    /// `connected` or `disconnected`.
    pub action: &'static str,
    pub interface: String,
    /// The link's device, empty when unknown.
    pub device: String,
    /// The new state's name (`up`, `down`).
    pub state: &'static str,
}

/// One run in progress.
#[derive(Debug)]
struct Run {
    child: Child,
    deadline: Instant,
    interface: String,
}

/// The script's path, the runs not yet reaped and the events waiting for a free slot.
#[derive(Debug)]
pub struct Hook {
    path: PathBuf,
    timeout: Duration,
    running: Vec<Run>,
    /// At most one per interface: its latest event (an older one is superseded).
    queued: Vec<HookEvent>,
}

impl Hook {
    /// A hook that runs `path` when it exists at the time of an event.
    pub fn new(path: PathBuf) -> Hook {
        Hook {
            path,
            timeout: HOOK_TIMEOUT,
            running: Vec::new(),
            queued: Vec::new(),
        }
    }

    /// Starts the script for `event` and returns at once; `Ok(false)` when there is no
    /// script. When every slot is busy the event is queued (replacing an older queued event of
    /// the same interface) and the error says so, for the log.
    pub fn run(&mut self, event: &HookEvent) -> Result<bool> {
        self.reap();
        if !self.path.is_file() {
            return Ok(false);
        }
        if self.running.len() >= MAX_RUNNING {
            self.queued.retain(|q| q.interface != event.interface);
            self.queued.push(event.clone());
            return Err(Error::HookBusy(format!(
                "{}: {MAX_RUNNING} runs still busy; {} {} queued (runs when one ends or is \
                 killed after {:?})",
                self.path.display(),
                event.interface,
                event.action,
                self.timeout
            )));
        }
        self.start(event)?;
        Ok(true)
    }

    fn start(&mut self, event: &HookEvent) -> Result<()> {
        // `env NAME=value ...` sets the script's environment; Command::env would link std's
        // whole environment-map code (about 9 KB) for these three variables. Its own process
        // group lets a timeout kill whatever the script started.
        let child = Command::new("env")
            .arg(format!("ACTION={}", event.action))
            .arg(format!("INTERFACE={}", event.interface))
            .arg(format!("DEVICE={}", event.device))
            .arg("/bin/sh")
            .arg(&self.path)
            .arg(&event.interface)
            .arg(event.state)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io(self.path.display(), e))?;
        self.running.push(Run {
            child,
            deadline: Instant::now() + self.timeout,
            interface: event.interface.clone(),
        });
        Ok(())
    }

    /// Kills runs past their deadline, collects the exit status of every finished run (call on
    /// SIGCHLD and at [`Hook::deadline`]), then starts queued events in the freed slots.
    pub fn reap(&mut self) {
        let now = Instant::now();
        for run in self.running.iter_mut().filter(|r| r.deadline <= now) {
            // The run leads its own process group: the whole group goes.
            let _ = killpg(Pid::from_raw(run.child.id() as i32), Signal::SIGKILL);
            let _ = run.child.wait();
            crate::daemon::log_error(&format!(
                "{}: run for {} killed after {:?}",
                self.path.display(),
                run.interface,
                self.timeout
            ));
        }
        self.running
            .retain_mut(|run| run.deadline > now && matches!(run.child.try_wait(), Ok(None)));
        while self.running.len() < MAX_RUNNING && !self.queued.is_empty() {
            let event = self.queued.remove(0);
            if let Err(e) = self.start(&event) {
                crate::daemon::log_error(&format!("{}: hook: {e}", event.interface));
            }
        }
    }

    /// When the oldest run must be killed: the daemon's loop wakes up then to call
    /// [`Hook::reap`].
    pub fn deadline(&self) -> Option<Instant> {
        self.running.iter().map(|r| r.deadline).min()
    }

    /// Runs started and not yet reaped.
    #[cfg(test)]
    fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// A temp dir removed when dropped, also when the test fails.
    struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("cmlb-hook-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes the user script into `dir` from `body`, in which `{out}` stands for the file
    /// `out` in `dir`; returns the paths of the script and of that file.
    fn write_script(dir: &Path, out: &str, body: &str) -> (PathBuf, PathBuf) {
        let script = dir.join("connmark-lb.user");
        let out = dir.join(out);
        std::fs::write(&script, body.replace("{out}", &out.display().to_string())).unwrap();
        (script, out)
    }

    /// Reaps until no run is left, for at most five seconds.
    fn wait_idle(hook: &mut Hook) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while hook.running() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            hook.reap();
        }
    }

    fn event() -> HookEvent {
        HookEvent {
            action: "disconnected",
            interface: "wanb".into(),
            device: "eth2".into(),
            state: "down",
        }
    }

    #[test]
    fn script_gets_event_in_arguments_and_environment_without_blocking() {
        let dir = temp_dir("run");
        let (script, out) = write_script(
            &dir,
            "out",
            "sleep 0.3\necho \"$ACTION $INTERFACE $DEVICE $1 $2\" > {out}.tmp\nmv {out}.tmp {out}\n",
        );
        let mut hook = Hook::new(script);
        let started = Instant::now();
        assert!(hook.run(&event()).unwrap());
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(hook.running(), 1);
        wait_idle(&mut hook);
        assert_eq!(hook.running(), 0);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "disconnected wanb eth2 wanb down\n"
        );
    }

    #[test]
    fn script_starts_with_no_signal_blocked_by_the_daemon() {
        use nix::sys::signal::{SigSet, Signal};
        let dir = temp_dir("mask");
        let (script, out) = write_script(
            &dir,
            "mask",
            "grep SigBlk /proc/self/status > {out}.tmp\nmv {out}.tmp {out}\n",
        );
        let mask = std::thread::spawn(move || {
            let mut blocked = SigSet::empty();
            blocked.add(Signal::SIGTERM);
            blocked.add(Signal::SIGHUP);
            blocked.thread_block().unwrap();
            let mut hook = Hook::new(script);
            assert!(hook.run(&event()).unwrap());
            wait_idle(&mut hook);
            std::fs::read_to_string(&out).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(
            mask.split_whitespace().nth(1),
            Some("0000000000000000"),
            "{mask}"
        );
    }

    #[test]
    fn missing_script_is_not_an_error_and_stuck_runs_never_drop_the_latest_event() {
        let dir = temp_dir("bound");
        let mut hook = Hook::new(dir.join("connmark-lb.user"));
        assert!(!hook.run(&event()).unwrap());
        let (_, out) = write_script(
            &dir,
            "out",
            "[ \"$INTERFACE\" = stuck ] && exec sleep 1000\necho \"$ACTION $1 $2\" >> {out}\n",
        );
        hook.timeout = Duration::from_millis(500);
        let stuck = HookEvent {
            interface: "stuck".into(),
            ..event()
        };
        for _ in 0..MAX_RUNNING {
            assert!(hook.run(&stuck).unwrap());
        }
        let error = hook.run(&event()).unwrap_err();
        assert!(error.to_string().contains("runs still busy"), "{error}");
        let latest = HookEvent {
            action: "connected",
            state: "up",
            ..event()
        };
        assert!(hook.run(&latest).is_err());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !out.exists() || hook.running() > 0 {
            assert!(Instant::now() < deadline, "the queued event never ran");
            std::thread::sleep(Duration::from_millis(20));
            hook.reap();
        }
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "connected wanb up\n",
            "only the latest event of an interface runs"
        );
        assert_eq!(hook.deadline(), None);
    }
}
