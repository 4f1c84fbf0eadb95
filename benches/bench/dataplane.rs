//! Data-plane cost: what the rules cost every packet and every new connection, measured LAN ->
//! server through the router for each setup, against plain forwarding with one SNAT.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Options;
use crate::addr::SERVICE;
use crate::checks::tcp_target;
use crate::lbconfig::Balance;
use crate::measure::{self, Invocation, Summary};
use crate::netns::Netns;
use crate::router::{Router, Setup};
use crate::topology::Topology;
use crate::traffic::{TcpLoad, spawn_in};

pub const IPERF_PORT: u16 = 5201;
/// Parallel clients opening short connections: enough to keep both cores busy.
pub const RATE_WORKERS: usize = 4;

/// Throughput and new-connection rate per setup.
#[derive(Debug, Clone)]
pub struct Dataplane {
    pub links: usize,
    pub iperf_seconds: u64,
    pub connections_per_run: usize,
    /// Gbit/s of one TCP stream, per setup key.
    pub throughput_gbps: BTreeMap<&'static str, Compared>,
    /// Completed short connections per second, per setup key.
    pub connections_per_second: BTreeMap<&'static str, Compared>,
}

/// One setup's figure and how it compares with plain forwarding.
#[derive(Debug, Clone)]
pub struct Compared {
    pub value: Summary,
    /// The setup's figure over plain forwarding's in the same run, in percent: pairs measured
    /// seconds apart, so slow changes in the machine's load cancel out.
    pub percent_of_plain: Summary,
}

/// Summarises per-run samples (index = run) of every setup against plain forwarding's.
fn compare(samples: BTreeMap<&'static str, Vec<f64>>) -> BTreeMap<&'static str, Compared> {
    let plain = samples[Setup::Plain.key()].clone();
    samples
        .into_iter()
        .map(|(key, values)| {
            let percent: Vec<f64> = values
                .iter()
                .zip(&plain)
                .map(|(value, plain)| 100.0 * value / plain)
                .collect();
            let compared = Compared {
                value: Summary::of(&values),
                percent_of_plain: Summary::of(&percent),
            };
            (key, compared)
        })
        .collect()
}

/// Measures every setup on a two-link router.
pub fn measure(options: &Options) -> Dataplane {
    let links = 2;
    let topo = Topology::new(links);
    let router = Router::new(&topo, &options.binary, &options.seed_script);
    crate::reuse_client_ports(&topo.lan);
    let iperf = Iperf3Server::start(&topo.srv, IPERF_PORT);
    let mut throughput: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut rate: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for run in 0..options.dataplane_runs {
        for offset in 0..Setup::ALL.len() {
            crate::check_interrupted();
            let setup = Setup::ALL[(run + offset) % Setup::ALL.len()];
            router.reset();
            router.install(setup, &vec![1; links], Balance::RoundRobin);
            router.verify(setup, links);
            let gbps = iperf.measure(&topo, options.iperf_seconds);
            let per_second = connection_rate(&topo, options.rate_connections);
            eprintln!(
                "bench: data plane run {} {}: {gbps:.2} Gbit/s, {per_second:.0} connections/s",
                run + 1,
                setup.label()
            );
            throughput.entry(setup.key()).or_default().push(gbps);
            rate.entry(setup.key()).or_default().push(per_second);
        }
    }
    router.reset();
    Dataplane {
        links,
        iperf_seconds: options.iperf_seconds,
        connections_per_run: options.rate_connections,
        throughput_gbps: compare(throughput),
        connections_per_second: compare(rate),
    }
}

/// `count` short connections LAN -> server; all must succeed.
pub fn connection_rate(topo: &Topology, count: usize) -> f64 {
    let start = Instant::now();
    let tally = TcpLoad::start(&topo.lan, tcp_target(), RATE_WORKERS, count).wait();
    let elapsed = start.elapsed();
    assert_eq!(
        tally.succeeded(),
        count as u64,
        "short connections failed: {:?}",
        tally.errors
    );
    count as f64 / elapsed.as_secs_f64()
}

/// An iperf3 server on the service address, stopped when dropped.
pub struct Iperf3Server {
    child: Child,
    port: u16,
}

impl Iperf3Server {
    pub fn start(ns: &Netns, port: u16) -> Iperf3Server {
        let args = [
            "-s".to_string(),
            "-B".to_string(),
            SERVICE.to_string(),
            "-p".to_string(),
            port.to_string(),
        ];
        let child = spawn_in(ns, move || {
            Command::new("iperf3")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn iperf3 server: {e}"))
        })
        .join()
        .unwrap_or_else(|_| panic!("iperf3 starter thread panicked"));
        let server = Iperf3Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !listening(ns, port) {
            assert!(
                Instant::now() < deadline,
                "iperf3 server not listening on port {port} after 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// One stream of `seconds` (after one second of slow start left out); returns Gbit/s.
    pub fn measure(&self, topo: &Topology, seconds: u64) -> f64 {
        let mut invocation = Invocation::new(
            "iperf3",
            &[
                "-c",
                &SERVICE.to_string(),
                "-p",
                &self.port.to_string(),
                "-t",
                &seconds.to_string(),
                "-O",
                "1",
                "-J",
                "--connect-timeout",
                "3000",
            ],
            topo.dir.path(),
        );
        invocation.deadline = Duration::from_secs(seconds + 20);
        measure::timed(&topo.lan, &invocation);
        let path = topo.dir.path().join("stdout");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read iperf3 output: {e}"));
        let report: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("iperf3 JSON: {e}\n{text}"));
        report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or_else(|| panic!("no end.sum_received.bits_per_second in\n{text}"))
            / 1e9
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a TCP socket in `ns` listens on `port` (read from the namespace's /proc view).
fn listening(ns: &Netns, port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    spawn_in(ns, move || {
        std::fs::read_to_string("/proc/thread-self/net/tcp")
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&wanted) && fields[3] == "0A"
            })
    })
    .join()
    .unwrap_or(false)
}
