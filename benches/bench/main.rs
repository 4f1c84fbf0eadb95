//! `make bench`: measures connmark-lb against baselines (the seed recipe, plain forwarding) in
//! the e2e namespace topology and writes BENCH.md and bench/results.json.
//!
//! `--smoke` runs one tiny iteration (2 links, a few hundred connections, seconds) that checks
//! every measurement still works; `make test` runs it so the bench cannot rot.

// The test fixtures, shared with tests/it; the bench uses a part of them and none of their tests.
#[allow(dead_code, unused_imports)]
#[path = "../../tests/it/support/mod.rs"]
mod support;
use support::{addr, busy, checks, lbconfig, netns, topology, traffic};

mod apply_cost;
mod balance;
mod classes;
mod daemon;
mod dataplane;
mod footprint;
mod hitless;
mod ipv6;
mod measure;
mod nft_cost;
mod report;
mod router;
mod sections;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use argh::FromArgs;
use nix::sys::signal::{SigSet, Signal};

use crate::lbconfig::Backend;
use crate::netns::Netns;
use crate::traffic::spawn_in;

/// Measures apply cost, data-plane cost, balance quality and footprint against baselines.
#[derive(FromArgs)]
struct Args {
    /// one tiny iteration that checks the bench works; writes into a temporary directory
    #[argh(switch)]
    smoke: bool,
    /// passed by `cargo bench`; no effect
    #[argh(switch)]
    #[allow(dead_code)]
    bench: bool,
    /// the connmark-lb binary to measure (default: the one cargo built)
    #[argh(option)]
    binary: Option<PathBuf>,
    /// a shipped file whose size to report, as label=path (repeatable)
    #[argh(option)]
    artifact: Vec<String>,
    /// runs per figure (default 9, data plane 15; --smoke: 1)
    #[argh(option)]
    runs: Option<usize>,
    /// where BENCH.md and results.json go (default: the repository, results in bench/)
    #[argh(option)]
    out: Option<PathBuf>,
    /// run only this added section (repeatable; see sections.rs), print its figures and
    /// write nothing
    #[argh(option)]
    only: Vec<String>,
}

/// Everything a measurement needs to know: what to run and how much of it.
pub struct Options {
    pub smoke: bool,
    pub binary: PathBuf,
    pub seed_script: PathBuf,
    pub runs: usize,
    /// Runs of the data-plane comparison: its noise (other load on the machine) is larger than
    /// the differences it measures, so it gets more pairs than the rest.
    pub dataplane_runs: usize,
    pub link_counts: Vec<usize>,
    pub iperf_seconds: u64,
    pub rate_connections: usize,
    pub weight_sets: Vec<Vec<u32>>,
    pub balance_connections: usize,
    pub balance_backends: Vec<Backend>,
    /// Also measure failover with the default tracking options (seconds per run), not only
    /// with the 0.5 s interval.
    pub failover_defaults: bool,
    /// How long the daemon's memory is watched.
    pub daemon_watch: Duration,
    pub artifacts: Vec<(String, PathBuf)>,
}

impl Options {
    fn from_args(args: &Args) -> Options {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let artifacts = args
            .artifact
            .iter()
            .map(|spec| {
                let (label, path) = spec
                    .split_once('=')
                    .unwrap_or_else(|| panic!("--artifact {spec}: expected label=path"));
                (label.to_string(), PathBuf::from(path))
            })
            .collect();
        let binary = args
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_connmark-lb")));
        let common = Options {
            smoke: args.smoke,
            binary: std::fs::canonicalize(&binary)
                .unwrap_or_else(|e| panic!("binary {}: {e}", binary.display())),
            seed_script: repo.join("bench/seed.sh"),
            runs: 9,
            dataplane_runs: 15,
            link_counts: vec![2, 4, 8],
            iperf_seconds: 5,
            rate_connections: 5000,
            weight_sets: vec![vec![1, 1], vec![1, 2], vec![1, 1, 2]],
            balance_connections: 10_000,
            balance_backends: balance::BACKENDS.to_vec(),
            failover_defaults: true,
            daemon_watch: Duration::from_secs(20),
            artifacts,
        };
        let options = if args.smoke {
            Options {
                runs: 1,
                dataplane_runs: 1,
                link_counts: vec![2],
                iperf_seconds: 1,
                rate_connections: 100,
                weight_sets: vec![vec![1, 2]],
                balance_connections: 300,
                balance_backends: vec![Backend::Nftables],
                failover_defaults: false,
                daemon_watch: Duration::from_secs(4),
                ..common
            }
        } else {
            common
        };
        Options {
            runs: args.runs.unwrap_or(options.runs),
            dataplane_runs: args.runs.unwrap_or(options.dataplane_runs),
            ..options
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Turns SIGINT/SIGTERM/SIGHUP into a flag the main thread checks between steps, so an
/// interrupted bench unwinds and its guards remove the namespaces. Must run before any thread
/// starts, as threads inherit the blocked set.
fn catch_signals() {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .unwrap_or_else(|e| panic!("block signals: {e}"));
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            eprintln!("bench: {signal}: stopping after the current step and cleaning up");
            INTERRUPTED.store(true, Ordering::Relaxed);
        }
    });
}

/// Unwinds (and so cleans up) when a signal asked the bench to stop.
pub fn check_interrupted() {
    assert!(
        !INTERRUPTED.load(Ordering::Relaxed),
        "interrupted by a signal"
    );
}

/// Lets the LAN host open tens of thousands of short connections in a row: the whole port
/// range, and ports in TIME_WAIT reused for new connections.
pub fn reuse_client_ports(lan: &Netns) {
    spawn_in(lan, || {
        for (key, value) in [("ip_local_port_range", "1024 65535"), ("tcp_tw_reuse", "1")] {
            let path = format!("/proc/sys/net/ipv4/{key}");
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
        }
    })
    .join()
    .unwrap_or_else(|_| panic!("sysctl thread panicked"));
}

fn main() {
    catch_signals();
    let args: Args = argh::from_env();
    let options = Options::from_args(&args);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = std::time::Instant::now();

    if !args.only.is_empty() {
        let chosen = sections::run(&options, |key| args.only.iter().any(|o| o == key));
        assert_eq!(
            chosen.len(),
            args.only.len(),
            "--only: known sections are {:?}",
            sections::keys()
        );
        print!("{}", report::render_sections(&chosen));
        return;
    }

    eprintln!("bench: apply cost");
    let apply = apply_cost::measure(&options);
    let nft_steps = nft_cost::measure(&options);
    eprintln!("bench: data plane");
    let dataplane = dataplane::measure(&options);
    eprintln!("bench: balance quality");
    let balance = balance::measure(&options);
    eprintln!("bench: failover daemon");
    let daemon = daemon::measure(&options);
    let figures = report::Figures {
        apply,
        nft_steps,
        dataplane,
        balance,
        daemon,
        artifacts: footprint::measure(&options.artifacts),
        sections: sections::run(&options, |_| true),
    };
    let results = report::Results::new(&options, figures, started);
    if options.smoke {
        report::check_smoke(&results);
        let dir = std::env::temp_dir().join(format!("connmark-lb-bench-{}", std::process::id()));
        report::write(
            &results,
            &dir.join("BENCH.md"),
            &dir.join("results.json"),
            repo,
        );
        report::check_written(&results, &dir.join("BENCH.md"), &dir.join("results.json"));
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
        eprintln!(
            "bench: smoke run passed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    } else {
        let (markdown, json) = match &args.out {
            Some(dir) => (dir.join("BENCH.md"), dir.join("results.json")),
            None => (repo.join("BENCH.md"), repo.join("bench/results.json")),
        };
        report::write(&results, &markdown, &json, repo);
        eprintln!(
            "bench: wrote {} and {} in {:.0} s",
            markdown.display(),
            json.display(),
            started.elapsed().as_secs_f64()
        );
    }
}
