//! Apply cost: wall time, processes and memory of installing the rules, ours against the seed
//! recipe, for several link counts, from a bare router and as a re-apply.

use crate::Options;
use crate::lbconfig::{Backend, Balance};
use crate::measure::{self, ExecTrace, Summary};
use crate::router::{Router, Setup};
use crate::topology::Topology;

/// The setups whose apply is measured.
const SETUPS: [Setup; 3] = [
    Setup::Ours(Backend::Nftables),
    Setup::Ours(Backend::Iptables),
    Setup::Seed,
];

/// Where an apply starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The bare router: nothing of ours installed.
    Clean,
    /// The same config applied a second time.
    Reapply,
}

impl Start {
    /// The name used in BENCH.md and results.json.
    pub fn label(self) -> &'static str {
        match self {
            Start::Clean => "clean",
            Start::Reapply => "re-apply",
        }
    }
}

/// The figures of one setup, link count and start.
#[derive(Debug, Clone)]
pub struct ApplyCost {
    pub links: usize,
    pub setup: &'static str,
    pub start: Start,
    pub wall_ms: Summary,
    /// Largest resident set of the program or any tool it ran.
    pub tree_peak_kib: Summary,
    /// Processes of a traced run, with the time each kind of child took (medians of the runs).
    pub trace: ExecTrace,
    /// Peak resident set of our binary itself (clean applies of ours only).
    pub own_peak_kib: Option<Summary>,
}

/// Measures every setup for every link count in `options`.
pub fn measure(options: &Options) -> Vec<ApplyCost> {
    let mut results = Vec::new();
    for &links in &options.link_counts {
        let topo = Topology::new(links);
        let router = Router::new(&topo, &options.binary, &options.seed_script);
        let weights = vec![1; links];
        let invocations: Vec<_> = SETUPS
            .iter()
            .map(|&setup| {
                router
                    .invocation(setup, &weights, Balance::RoundRobin)
                    .unwrap_or_else(|| panic!("{} has no apply", setup.label()))
            })
            .collect();
        let mut samples = vec![[Vec::new(), Vec::new()]; SETUPS.len()];
        for run in 0..options.runs {
            crate::check_interrupted();
            // Rotate the order so no setup always runs first (caches, CPU frequency).
            for offset in 0..SETUPS.len() {
                let index = (run + offset) % SETUPS.len();
                router.reset();
                samples[index][0].push(measure::timed(&topo.router, &invocations[index]));
                samples[index][1].push(measure::timed(&topo.router, &invocations[index]));
            }
        }
        for (index, &setup) in SETUPS.iter().enumerate() {
            crate::check_interrupted();
            let mut traces = [Vec::new(), Vec::new()];
            for _ in 0..options.runs {
                router.reset();
                for runs in &mut traces {
                    runs.push(measure::exec_trace(&topo.router, &invocations[index]));
                }
            }
            let [clean_trace, reapply_trace] = traces.map(|runs| ExecTrace::median_of(&runs));
            router.verify(setup, links);
            let own_peak_kib = matches!(setup, Setup::Ours(_)).then(|| {
                let peaks: Vec<f64> = (0..options.runs)
                    .map(|_| {
                        router.reset();
                        measure::own_peak_rss_kib(&topo.router, &invocations[index]) as f64
                    })
                    .collect();
                Summary::of(&peaks)
            });
            for (start, trace, own_peak_kib) in [
                (Start::Clean, clean_trace, own_peak_kib),
                (Start::Reapply, reapply_trace, None),
            ] {
                let timed = &samples[index][usize::from(start == Start::Reapply)];
                results.push(ApplyCost {
                    links,
                    setup: setup.key(),
                    start,
                    wall_ms: Summary::of(
                        &timed
                            .iter()
                            .map(|t| t.wall.as_secs_f64() * 1000.0)
                            .collect::<Vec<_>>(),
                    ),
                    tree_peak_kib: Summary::of(
                        &timed
                            .iter()
                            .map(|t| t.tree_peak_kib as f64)
                            .collect::<Vec<_>>(),
                    ),
                    trace,
                    own_peak_kib,
                });
            }
            eprintln!(
                "bench: apply {links} links {}: clean {:.1} ms, {} processes",
                setup.label(),
                results[results.len() - 2].wall_ms.median,
                results[results.len() - 2].trace.processes
            );
        }
        router.reset();
    }
    results
}
