//! Balance quality: how far each link's share of real connections is from its weight's share,
//! counted by the source address the server sees.

use crate::Options;
use crate::checks::{LinkLoad, tcp_target};
use crate::lbconfig::{Backend, Balance};
use crate::measure::Summary;
use crate::router::{Router, Setup};
use crate::topology::Topology;
use crate::traffic::TcpLoad;
/// Parallel clients: the order in which connections reach the router does not matter for the
/// count, so as many as keep the cores busy.
const WORKERS: usize = 8;

/// The share errors of one weight set, balance mode and backend.
#[derive(Debug, Clone)]
pub struct BalanceQuality {
    pub weights: Vec<u32>,
    pub balance: &'static str,
    pub backend: &'static str,
    pub connections_per_run: usize,
    /// The largest |share - weight share| over the links, in percentage points.
    pub error_points: Summary,
    /// Each link's share of the connections, in percent.
    pub shares_percent: Vec<Summary>,
}

/// Measures every weight set in `options` with both balance modes.
pub fn measure(options: &Options) -> Vec<BalanceQuality> {
    let links = options.weight_sets.iter().map(Vec::len).max().unwrap_or(2);
    let topo = Topology::new(links);
    let router = Router::new(&topo, &options.binary, &options.seed_script);
    crate::reuse_client_ports(&topo.lan);
    let mut results = Vec::new();
    for backend in &options.balance_backends {
        for weights in &options.weight_sets {
            for balance in [Balance::RoundRobin, Balance::Random] {
                crate::check_interrupted();
                router.reset();
                router.install(Setup::Ours(*backend), weights, balance);
                let mut errors = Vec::new();
                let mut shares = vec![Vec::new(); weights.len()];
                for _ in 0..options.runs {
                    crate::check_interrupted();
                    let count = options.balance_connections;
                    let tally = TcpLoad::start(&topo.lan, tcp_target(), WORKERS, count).wait();
                    assert_eq!(
                        tally.succeeded(),
                        count as u64,
                        "connections failed: {:?}",
                        tally.errors
                    );
                    // Links of the topology beyond the config's must carry nothing: weight 0.
                    let share = LinkLoad::from_tally(&topo, &tally).shares();
                    let mut weights_per_link = weights.clone();
                    weights_per_link.resize(share.len(), 0);
                    errors.push(largest_error(&share, &weights_per_link));
                    for (link, value) in share.into_iter().take(weights.len()).enumerate() {
                        shares[link].push(value);
                    }
                }
                let quality = BalanceQuality {
                    weights: weights.clone(),
                    balance: balance.name(),
                    backend: backend.name(),
                    connections_per_run: options.balance_connections,
                    error_points: Summary::of(&errors),
                    shares_percent: shares.iter().map(|s| Summary::of(s)).collect(),
                };
                eprintln!(
                    "bench: balance {} {} {:?}: error {:.2} points (median)",
                    backend.name(),
                    balance.name(),
                    weights,
                    quality.error_points.median
                );
                results.push(quality);
            }
        }
    }
    router.reset();
    results
}

/// The largest distance, in percentage points, between a link's share and its weight's share.
fn largest_error(share: &[f64], weights: &[u32]) -> f64 {
    let total: u32 = weights.iter().sum();
    share
        .iter()
        .zip(weights)
        .map(|(s, &w)| (s - 100.0 * f64::from(w) / f64::from(total)).abs())
        .fold(0.0, f64::max)
}

/// The backends the balance figures are measured with.
pub const BACKENDS: [Backend; 2] = [Backend::Nftables, Backend::Iptables];
