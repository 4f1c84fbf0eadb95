//! IPv6 beside IPv4: what dual-stack costs an apply, and what the IPv6 rules (prefix pins,
//! NAT66) cost every new connection, next to the same figures for IPv4, each against plain
//! forwarding of its own family in the same run.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::Options;
use crate::addr::{link_device, v6};
use crate::checks::{servers, tcp_target, tcp6_target};
use crate::dataplane::RATE_WORKERS;
use crate::lbconfig::{Backend, Balance, LbConfig};
use crate::measure::{self, ExecTrace, Invocation, Summary};
use crate::report::{Section, Target};
use crate::router::path_str;
use crate::topology::Topology;
use crate::traffic::TcpLoad;

/// Which configs an apply is measured with.
const CONFIGS: [(&str, bool); 2] = [("IPv4 only", false), ("dual-stack", true)];
const BACKENDS: [Backend; 2] = [Backend::Nftables, Backend::Iptables];

/// One apply figure: backend, config, clean and re-apply wall time, processes.
struct ApplyFigure {
    backend: Backend,
    config: &'static str,
    clean_ms: Summary,
    reapply_ms: Summary,
    processes: usize,
}

/// New connections per second of one family, plain and through our rules.
struct RateFigure {
    family: &'static str,
    plain: Summary,
    ours: Summary,
    percent_of_plain: Summary,
}

pub fn measure(options: &Options) -> Section {
    let topo = Topology::dual_stack(2);
    let _servers = servers(&topo);
    crate::reuse_client_ports(&topo.lan);
    let apply = apply_costs(&topo, options);
    let rates = connection_rates(&topo, options);
    section(&apply, &rates, options)
}

/// `connmark-lb VERB` with `extra` arguments and the topology's state dir, in the router.
fn lb(topo: &Topology, options: &Options, args: &[&str]) -> Invocation {
    let state = topo.state_dir();
    let mut all = args.to_vec();
    all.extend(["--state-dir", path_str(&state)]);
    Invocation::new(&options.binary, &all, topo.dir.path())
}

fn apply_costs(topo: &Topology, options: &Options) -> Vec<ApplyFigure> {
    let mut figures = Vec::new();
    let stop = lb(topo, options, &["stop"]);
    for backend in BACKENDS {
        for (name, dual) in CONFIGS {
            let mut config = LbConfig::new(backend, Balance::RoundRobin, &[1, 1]);
            if dual {
                config = config.with_ipv6(&[1, 1]);
            }
            let file = topo.write_config(&format!("ipv6-{}-{dual}", backend.name()), &config);
            let apply = lb(topo, options, &["apply", file.flag(), file.path_str()]);
            let (mut clean, mut again) = (Vec::new(), Vec::new());
            for _ in 0..options.runs {
                crate::check_interrupted();
                measure::timed(&topo.router, &stop);
                clean.push(measure::timed(&topo.router, &apply).wall.as_secs_f64() * 1000.0);
                again.push(measure::timed(&topo.router, &apply).wall.as_secs_f64() * 1000.0);
            }
            measure::timed(&topo.router, &stop);
            let trace: ExecTrace = measure::exec_trace(&topo.router, &apply);
            let figure = ApplyFigure {
                backend,
                config: name,
                clean_ms: Summary::of(&clean),
                reapply_ms: Summary::of(&again),
                processes: trace.processes,
            };
            eprintln!(
                "bench: ipv6 apply {} {name}: clean {:.1} ms, re-apply {:.1} ms, {} processes",
                backend.name(),
                figure.clean_ms.median,
                figure.reapply_ms.median,
                figure.processes
            );
            figures.push(figure);
        }
    }
    measure::timed(&topo.router, &stop);
    figures
}

/// Runs plain and ours alternately for each family: plain is main-table forwarding out of
/// link 1 with one masquerade rule per family, ours the dual-stack config (nftables).
fn connection_rates(topo: &Topology, options: &Options) -> Vec<RateFigure> {
    let config = topo.write_config(
        "ipv6-rate",
        &LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1, 1]).with_ipv6(&[1, 1]),
    );
    let apply = lb(topo, options, &["apply", config.flag(), config.path_str()]);
    let stop = lb(topo, options, &["stop"]);
    let plain = format!(
        "table inet bench_plain {{\n\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname \"{}\" masquerade\n\t}}\n}}\n",
        link_device(1)
    );
    topo.router.sysctl("net.ipv6.conf.all.forwarding=1");
    let mut samples: [[Vec<f64>; 2]; 2] = Default::default();
    for run in 0..options.runs {
        for step in 0..2 {
            crate::check_interrupted();
            // Alternate which setup goes first, so neither always meets a warmer machine.
            let ours = (run + step) % 2 == 1;
            if ours {
                measure::timed(&topo.router, &apply);
            } else {
                topo.router.nft(&plain);
            }
            for (family, rates) in samples.iter_mut().enumerate() {
                rates[usize::from(ours)].push(rate(topo, family == 1, options.rate_connections));
            }
            if ours {
                measure::timed(&topo.router, &stop);
            } else {
                topo.router.nft("delete table inet bench_plain\n");
            }
        }
    }
    ["IPv4", "IPv6"]
        .into_iter()
        .zip(samples)
        .map(|(family, [plain, ours])| {
            let percent: Vec<f64> = ours
                .iter()
                .zip(&plain)
                .map(|(o, p)| 100.0 * o / p)
                .collect();
            let figure = RateFigure {
                family,
                plain: Summary::of(&plain),
                ours: Summary::of(&ours),
                percent_of_plain: Summary::of(&percent),
            };
            eprintln!(
                "bench: ipv6 rate {family}: plain {:.0}/s, ours {:.0}/s ({:.1}%)",
                figure.plain.median, figure.ours.median, figure.percent_of_plain.median
            );
            figure
        })
        .collect()
}

/// `count` short TCP connections from the LAN host (IPv6: its ULA address); connections/s.
fn rate(topo: &Topology, ipv6: bool, count: usize) -> f64 {
    let started = std::time::Instant::now();
    let load = if ipv6 {
        TcpLoad::start_from(
            &topo.lan,
            Some(v6::HOST_ULA.into()),
            tcp6_target(),
            RATE_WORKERS,
            count,
        )
    } else {
        TcpLoad::start(&topo.lan, tcp_target(), RATE_WORKERS, count)
    };
    let tally = load.wait();
    assert_eq!(
        tally.succeeded(),
        count as u64,
        "connections failed: {:?}",
        tally.errors
    );
    count as f64 / started.elapsed().as_secs_f64()
}

fn summary_json(s: &Summary) -> Value {
    json!({"min": s.min, "median": s.median, "max": s.max, "runs": s.runs})
}

fn section(apply: &[ApplyFigure], rates: &[RateFigure], options: &Options) -> Section {
    let mut md = format!(
        "Two links per family on the e2e topology (dual-stack ISPs delegating a /56 each), \
         medians of {} runs. An IPv4-only config pays nothing for IPv6 support; a dual-stack \
         one adds an `ip -6` read and, when something changes, an `ip -6 -batch` (and \
         `ip6tables-restore` with iptables).\n\n\
         | backend | config | apply, clean (ms) | re-apply (ms) | processes (clean) |\n\
         |---|---|---|---|---|\n",
        options.runs
    );
    for a in apply {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} | {} |",
            a.backend.name(),
            a.config,
            a.clean_ms.median,
            a.reapply_ms.median,
            a.processes
        );
    }
    let _ = write!(
        md,
        "\nNew connections per second from the LAN host ({} per run, {RATE_WORKERS} clients), \
         plain forwarding with one masquerade rule against the dual-stack ruleset (nftables; \
         IPv6 from a ULA address: balanced, NAT66):\n\n\
         | family | plain | connmark-lb | connmark-lb / plain |\n|---|---|---|---|\n",
        options.rate_connections
    );
    for r in rates {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.1}% |",
            r.family, r.plain.median, r.ours.median, r.percent_of_plain.median
        );
    }
    let ratio = |family: &str| {
        rates
            .iter()
            .find(|r| r.family == family)
            .map_or(0.0, |r| r.percent_of_plain.median)
    };
    let (v4, v6) = (ratio("IPv4"), ratio("IPv6"));
    let targets = vec![Target {
        name: "IPv6 connection rate through the rules, % of plain IPv6 forwarding".into(),
        required: "within 5 points of IPv4's own ratio".into(),
        measured: format!("{v6:.1}% (IPv4 {v4:.1}%)"),
        met: (!options.smoke).then_some((v6 - v4).abs() <= 5.0),
    }];
    Section {
        key: "ipv6",
        title: "IPv6 beside IPv4".into(),
        markdown: md,
        json: json!({
            "apply": apply.iter().map(|a| json!({
                "backend": a.backend.name(),
                "config": a.config,
                "clean_ms": summary_json(&a.clean_ms),
                "reapply_ms": summary_json(&a.reapply_ms),
                "processes": a.processes,
            })).collect::<Vec<_>>(),
            "connections_per_second": rates.iter().map(|r| json!({
                "family": r.family,
                "plain": summary_json(&r.plain),
                "ours": summary_json(&r.ours),
                "percent_of_plain": summary_json(&r.percent_of_plain),
            })).collect::<Vec<_>>(),
        }),
        targets,
    }
}
