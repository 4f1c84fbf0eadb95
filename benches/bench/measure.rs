//! Measuring one program run inside a namespace: wall time, the processes it starts (and what
//! each costs), its own peak memory. Every run has a deadline after which it is killed.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::traffic::spawn_in;

/// The smallest, middle and largest of several samples: machines are noisy, one run says little.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub runs: usize,
}

impl Summary {
    /// Summarises `samples` (at least one).
    pub fn of(samples: &[f64]) -> Summary {
        assert!(!samples.is_empty(), "no samples to summarise");
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 0 {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Summary {
            min: sorted[0],
            median,
            max: sorted[sorted.len() - 1],
            runs: sorted.len(),
        }
    }
}

/// A program with its arguments, run inside a namespace with its output kept in `log_dir`.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log_dir: PathBuf,
    pub deadline: Duration,
}

impl Invocation {
    /// A run with the default 60 s deadline: nothing measured here takes more than seconds.
    pub fn new(program: impl Into<PathBuf>, args: &[&str], log_dir: &Path) -> Invocation {
        Invocation {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            log_dir: log_dir.to_path_buf(),
            deadline: Duration::from_secs(60),
        }
    }

    /// The same program run under `strace`, logging every exec and exit with timestamps to
    /// `trace`. Only those two syscalls stop the tracee (seccomp filter), so the timing of
    /// each process stays close to an untraced run.
    pub fn under_strace(&self, trace: &Path) -> Invocation {
        let mut args: Vec<String> = [
            "-f",
            "-qq",
            "--seccomp-bpf",
            "-ttt",
            "-e",
            "trace=execve,exit_group",
            "-o",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(trace.display().to_string());
        args.push("--".to_string());
        args.push(self.program.display().to_string());
        args.extend(self.args.iter().cloned());
        Invocation {
            program: PathBuf::from("strace"),
            args,
            log_dir: self.log_dir.clone(),
            deadline: self.deadline,
        }
    }

    fn command(&self) -> Command {
        let log = |name: &str| {
            let path = self.log_dir.join(name);
            File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
        };
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log("stdout"))
            .stderr(log("stderr"));
        command
    }

    fn describe(&self) -> String {
        format!("{} {}", self.program.display(), self.args.join(" "))
    }

    /// Panics with the program's output unless it exited 0.
    fn check_status(&self, status: libc::c_int, killed: bool) {
        let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        if ok && !killed {
            return;
        }
        let read =
            |name: &str| std::fs::read_to_string(self.log_dir.join(name)).unwrap_or_default();
        let why = if killed {
            format!("killed after the {:?} deadline", self.deadline)
        } else {
            format!("wait status {status:#x}")
        };
        panic!(
            "`{}` failed ({why})\nstdout: {}\nstderr: {}",
            self.describe(),
            read("stdout"),
            read("stderr")
        );
    }
}

/// What one run cost from the outside.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub wall: Duration,
    /// The largest resident set of the program or any child it waited for (wait4 rusage).
    pub tree_peak_kib: u64,
}

/// Runs `invocation` in `ns` to completion (it must exit 0).
pub fn timed(ns: &Netns, invocation: &Invocation) -> Timed {
    let invocation = invocation.clone();
    spawn_in(ns, move || {
        let mut command = invocation.command();
        let start = Instant::now();
        // Reaped below with wait4, which also reports the rusage.
        let child = command
            .spawn()
            .map(|child| child.id())
            .unwrap_or_else(|e| panic!("spawn {}: {e}", invocation.describe()));
        let watchdog = Watchdog::start(child, invocation.deadline);
        let (status, usage) = wait4(child);
        let wall = start.elapsed();
        invocation.check_status(status, watchdog.finish());
        Timed {
            wall,
            tree_peak_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        }
    })
    .join()
    .unwrap_or_else(|_| panic!("measuring thread panicked"))
}

/// Starts `invocation` in `ns` and returns at once (for daemons); the caller stops and reaps
/// it.
pub fn spawn(ns: &Netns, invocation: &Invocation) -> Child {
    let invocation = invocation.clone();
    spawn_in(ns, move || {
        invocation
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", invocation.describe()))
    })
    .join()
    .unwrap_or_else(|_| panic!("spawning thread panicked"))
}

/// The peak resident memory (VmHWM) of the program itself, not of the tools it runs: read
/// from /proc while the program is held at its exit with ptrace, before its memory is gone.
pub fn own_peak_rss_kib(ns: &Netns, invocation: &Invocation) -> u64 {
    let invocation = invocation.clone();
    spawn_in(ns, move || {
        let mut command = invocation.command();
        // SAFETY: PTRACE_TRACEME is a single syscall, safe between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let null = std::ptr::null_mut::<libc::c_void>();
                if libc::ptrace(libc::PTRACE_TRACEME, 0, null, null) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // Reaped below with wait4, which also reports the rusage.
        let child = command
            .spawn()
            .map(|child| child.id())
            .unwrap_or_else(|e| panic!("spawn {}: {e}", invocation.describe()));
        let pid = pid_of(child);
        let watchdog = Watchdog::start(child, invocation.deadline);
        let mut peak = None;
        let mut first_stop = true;
        let status = loop {
            let (status, _) = wait4(child);
            if !libc::WIFSTOPPED(status) {
                break status;
            }
            let mut deliver = libc::WSTOPSIG(status);
            if first_stop {
                // The stop at exec: from here on, also stop at exit.
                ptrace(
                    libc::PTRACE_SETOPTIONS,
                    pid,
                    (libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL) as usize,
                );
                first_stop = false;
                deliver = 0;
            } else if status >> 8 == libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8) {
                peak = Some(vm_hwm_kib(pid));
                deliver = 0;
            }
            ptrace(libc::PTRACE_CONT, pid, deliver as usize);
        };
        invocation.check_status(status, watchdog.finish());
        peak.unwrap_or_else(|| panic!("{} exited without an exit stop", invocation.describe()))
    })
    .join()
    .unwrap_or_else(|_| panic!("measuring thread panicked"))
}

fn ptrace(request: libc::c_uint, pid: libc::pid_t, data: usize) {
    // SAFETY: plain ptrace requests on our own stopped tracee; no pointers are passed.
    let rc = unsafe { libc::ptrace(request, pid, std::ptr::null_mut::<libc::c_void>(), data) };
    assert_ne!(
        rc,
        -1,
        "ptrace {request}: {}",
        std::io::Error::last_os_error()
    );
}

fn vm_hwm_kib(pid: libc::pid_t) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {path}"))
}

fn pid_of(id: u32) -> libc::pid_t {
    libc::pid_t::try_from(id).unwrap_or_else(|_| panic!("pid {id} out of range"))
}

/// Waits for any state change of child `id`; returns the wait status and its rusage.
fn wait4(id: u32) -> (libc::c_int, libc::rusage) {
    let pid = pid_of(id);
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::__WALL, &mut usage) };
        if rc == pid {
            return (status, usage);
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4({pid}): {error}"
        );
    }
}

/// Kills a child that outlives its deadline. It holds a pidfd, so it can never hit another
/// process that got the same pid later.
struct Watchdog {
    fired: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Watchdog {
    fn start(id: u32, deadline: Duration) -> Watchdog {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid_of(id), 0) };
        assert!(
            fd >= 0,
            "pidfd_open({id}): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the fd was just returned to us and is owned by nothing else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let fired = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let fired = fired.clone();
            move || {
                let mut poll = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let until = Instant::now() + deadline;
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    let millis =
                        libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
                    // SAFETY: one valid pollfd.
                    let rc = unsafe { libc::poll(&mut poll, 1, millis) };
                    if rc > 0 {
                        return;
                    }
                    if rc == 0 {
                        fired.store(true, Ordering::Relaxed);
                        // SAFETY: signals exactly the process the pidfd refers to.
                        unsafe {
                            libc::syscall(
                                libc::SYS_pidfd_send_signal,
                                pidfd.as_raw_fd(),
                                libc::SIGKILL,
                                std::ptr::null::<libc::siginfo_t>(),
                                0,
                            );
                        }
                        return;
                    }
                }
            }
        });
        Watchdog { fired, thread }
    }

    /// Waits for the watchdog (the child has been reaped) and says whether it killed the child.
    fn finish(self) -> bool {
        let _ = self.thread.join();
        self.fired.load(Ordering::Relaxed)
    }
}

/// The processes one run started, from an strace log of execs and exits.
#[derive(Debug, Clone)]
pub struct ExecTrace {
    /// Successful execs, the traced program itself included.
    pub processes: usize,
    /// Per program (by file name): how many ran and their summed lifetime, children only.
    pub children: BTreeMap<String, ProgramCost>,
    /// The traced program's own lifetime.
    pub total_ms: f64,
}

impl ExecTrace {
    /// The typical one of several traced runs: the process count they must all share, and per
    /// program the median of its summed lifetime (one traced run alone is too noisy).
    pub fn median_of(traces: &[ExecTrace]) -> ExecTrace {
        let first = traces.first().unwrap_or_else(|| panic!("no traces"));
        for trace in traces {
            assert_eq!(
                (trace.processes, trace.children.keys().collect::<Vec<_>>()),
                (first.processes, first.children.keys().collect::<Vec<_>>()),
                "traced runs of the same apply started different processes"
            );
        }
        let median = |value: &dyn Fn(&ExecTrace) -> f64| {
            Summary::of(&traces.iter().map(value).collect::<Vec<_>>()).median
        };
        ExecTrace {
            processes: first.processes,
            children: first
                .children
                .iter()
                .map(|(program, cost)| {
                    let cost = ProgramCost {
                        count: cost.count,
                        total_ms: median(&|t| t.children[program].total_ms),
                    };
                    (program.clone(), cost)
                })
                .collect(),
            total_ms: median(&|t| t.total_ms),
        }
    }
}

/// How many times a program ran and how long its runs took together.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgramCost {
    pub count: usize,
    pub total_ms: f64,
}

/// Runs `invocation` under strace and reads back every process it started.
pub fn exec_trace(ns: &Netns, invocation: &Invocation) -> ExecTrace {
    let trace = invocation.log_dir.join("strace.log");
    timed(ns, &invocation.under_strace(&trace));
    let runs = read_trace(&trace);
    let (top, children) = runs
        .split_first()
        .unwrap_or_else(|| panic!("{}: no exec traced", trace.display()));
    ExecTrace {
        processes: runs.len(),
        children: cost_by_program(children),
        total_ms: top.lifetime_ms(),
    }
}

/// The processes started from `from` to `to` (unix seconds) in a trace of a long-running
/// program, as if they were the children of one run.
pub fn execs_between(runs: &[ProcessRun], from: f64, to: f64) -> ExecTrace {
    let window: Vec<ProcessRun> = runs
        .iter()
        .filter(|run| (from..=to).contains(&run.start))
        .cloned()
        .collect();
    ExecTrace {
        processes: window.len(),
        children: cost_by_program(&window),
        total_ms: window.iter().map(ProcessRun::lifetime_ms).sum(),
    }
}

fn cost_by_program(runs: &[ProcessRun]) -> BTreeMap<String, ProgramCost> {
    let mut costs: BTreeMap<String, ProgramCost> = BTreeMap::new();
    for run in runs {
        let cost = costs.entry(run.program.clone()).or_default();
        cost.count += 1;
        cost.total_ms += run.lifetime_ms();
    }
    costs
}

/// One successful exec: the program and when it started and ended (unix seconds).
#[derive(Debug, Clone)]
pub struct ProcessRun {
    pid: u32,
    program: String,
    start: f64,
    end: Option<f64>,
}

impl ProcessRun {
    fn lifetime_ms(&self) -> f64 {
        self.end.map_or(0.0, |end| (end - self.start) * 1000.0)
    }
}

/// Reads the strace log at `path` (see [`Invocation::under_strace`]).
pub fn read_trace(path: &Path) -> Vec<ProcessRun> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_trace(&text)
}

/// Reads `strace -f -ttt -e trace=execve,exit_group` output, including calls split into
/// `<unfinished ...>` and `<... execve resumed>` halves when processes run side by side.
fn parse_trace(text: &str) -> Vec<ProcessRun> {
    let mut runs: Vec<ProcessRun> = Vec::new();
    let mut pending: BTreeMap<u32, (String, f64)> = BTreeMap::new();
    for line in text.lines() {
        // strace pads short pids: "1234  1.000 execve(...)".
        let Some((pid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((time, call)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let (Ok(pid), Ok(time)) = (pid.parse::<u32>(), time.parse::<f64>()) else {
            continue;
        };
        let succeeded = call.trim_end().ends_with("= 0");
        let started = if let Some(rest) = call.strip_prefix("execve(\"") {
            let path = rest.split('"').next().unwrap_or_default().to_string();
            if call.ends_with("<unfinished ...>") {
                pending.insert(pid, (path, time));
                None
            } else {
                succeeded.then_some((path, time))
            }
        } else if call.starts_with("<... execve resumed>") {
            pending.remove(&pid).filter(|_| succeeded)
        } else {
            if call.starts_with("exit_group(") {
                if let Some(run) = runs.iter_mut().rev().find(|r| r.pid == pid) {
                    run.end.get_or_insert(time);
                }
            }
            None
        };
        if let Some((path, start)) = started {
            // A process that execs again ends its previous program there.
            if let Some(run) = runs.iter_mut().rev().find(|r| r.pid == pid) {
                run.end.get_or_insert(start);
            }
            let program = path.rsplit('/').next().unwrap_or(&path).to_string();
            runs.push(ProcessRun {
                pid,
                program,
                start,
                end: None,
            });
        }
    }
    runs
}
