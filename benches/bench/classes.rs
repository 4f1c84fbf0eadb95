//! Traffic classes: what 50 classification rules and a 10,000-element address set cost the
//! data plane (against our plain 2-link ruleset, both as a share of plain forwarding in the
//! same run), and what applying that config costs.

use serde_json::json;

use crate::Options;
use crate::dataplane::{IPERF_PORT, Iperf3Server, connection_rate};
use crate::lbconfig::{Backend, Balance, LbConfig};
use crate::measure::{self, Invocation, Summary};
use crate::report::{Section, Target};
use crate::router::{Router, Setup, path_str};
use crate::topology::Topology;

/// Elements of the big set and classification rules before the one the traffic matches.
const SET_ELEMENTS: usize = 10_000;
const RULES: usize = 50;

/// 49 rules the bench traffic (TCP to the service port, iperf3) does not match, one of them
/// against the big set, then one that sends everything to the balanced policy.
fn classes_config() -> LbConfig {
    let mut text = String::from(
        "config member 'm1'\n\toption interface 'wan1'\n\n\
         config member 'm2'\n\toption interface 'wan2'\n\n\
         config policy 'both'\n\tlist use_member 'm1'\n\tlist use_member 'm2'\n\n\
         config set 'big'\n",
    );
    for i in 0..SET_ELEMENTS {
        text.push_str(&format!(
            "\tlist entry '10.{}.{}.1'\n",
            100 + i / 250,
            i % 250
        ));
    }
    text.push_str(
        "\nconfig rule 'in_set'\n\toption dest_set 'big'\n\toption use_policy 'both'\n\n",
    );
    for i in 1..RULES - 1 {
        text.push_str(&format!(
            "config rule 'r{i}'\n\toption proto 'tcp'\n\toption dest_port '{}'\n\toption use_policy 'both'\n\n",
            20000 + i
        ));
    }
    text.push_str("config rule 'rest'\n\toption use_policy 'both'\n");
    LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1, 1]).with_sections(&text)
}

/// The three setups compared in one run, in rotating order.
#[derive(Clone, Copy)]
enum Kind {
    Plain,
    Ours,
    Classes,
}

const KINDS: [(Kind, &str); 3] = [
    (Kind::Plain, "plain"),
    (Kind::Ours, "ours-nft"),
    (Kind::Classes, "ours-nft-classes"),
];

pub fn measure(options: &Options) -> Section {
    let topo = Topology::new(2);
    let router = Router::new(&topo, &options.binary, &options.seed_script);
    crate::reuse_client_ports(&topo.lan);
    let iperf = Iperf3Server::start(&topo.srv, IPERF_PORT);
    let config = topo.write_config("classes", &classes_config());
    let state = topo.state_dir();
    let apply = Invocation::new(
        &options.binary,
        &[
            "apply",
            config.flag(),
            config.path_str(),
            "--state-dir",
            path_str(&state),
        ],
        topo.dir.path(),
    );
    let mut gbps = [Vec::new(), Vec::new(), Vec::new()];
    let mut rate = [Vec::new(), Vec::new(), Vec::new()];
    let (mut clean_ms, mut reapply_ms) = (Vec::new(), Vec::new());
    for run in 0..options.runs {
        for offset in 0..KINDS.len() {
            crate::check_interrupted();
            let index = (run + offset) % KINDS.len();
            router.reset();
            match KINDS[index].0 {
                Kind::Plain => router.install(Setup::Plain, &[1, 1], Balance::RoundRobin),
                Kind::Ours => {
                    router.install(Setup::Ours(Backend::Nftables), &[1, 1], Balance::RoundRobin);
                }
                Kind::Classes => {
                    clean_ms.push(measure::timed(&topo.router, &apply).wall.as_secs_f64() * 1e3);
                    reapply_ms.push(measure::timed(&topo.router, &apply).wall.as_secs_f64() * 1e3);
                }
            }
            gbps[index].push(iperf.measure(&topo, options.iperf_seconds));
            rate[index].push(connection_rate(&topo, options.rate_connections));
        }
    }
    router.reset();
    let percent = |samples: &[Vec<f64>; 3], index: usize| {
        let ratios: Vec<f64> = samples[index]
            .iter()
            .zip(&samples[0])
            .map(|(value, plain)| 100.0 * value / plain)
            .collect();
        Summary::of(&ratios)
    };
    let (gbps_ours, gbps_classes) = (percent(&gbps, 1), percent(&gbps, 2));
    let (rate_ours, rate_classes) = (percent(&rate, 1), percent(&rate, 2));
    let (clean, reapply) = (Summary::of(&clean_ms), Summary::of(&reapply_ms));
    let gap = (gbps_ours.median - gbps_classes.median).max(rate_ours.median - rate_classes.median);
    let markdown = format!(
        "{RULES} rules (49 that the traffic does not match, one against a {SET_ELEMENTS}-element \
         set) before the balanced policy, against our plain 2-link ruleset; medians of {} runs, \
         as a share of plain forwarding in the same run.\n\n\
         | setup | throughput | new connections/s |\n|---|---|---|\n\
         | connmark-lb (nftables) | {:.1}% | {:.1}% |\n\
         | with {RULES} rules and a {SET_ELEMENTS}-element set | {:.1}% | {:.1}% |\n\n\
         Apply of that config: {:.1} ms from a bare router, {:.1} ms as a re-apply (median).\n",
        options.runs,
        gbps_ours.median,
        rate_ours.median,
        gbps_classes.median,
        rate_classes.median,
        clean.median,
        reapply.median,
    );
    let summary =
        |s: &Summary| json!({"min": s.min, "median": s.median, "max": s.max, "runs": s.runs});
    Section {
        key: "classes",
        title: "Traffic classes: 50 rules and a 10,000-element set".to_string(),
        markdown,
        json: json!({
            "rules": RULES,
            "set_elements": SET_ELEMENTS,
            "throughput_percent_of_plain": {"ours": summary(&gbps_ours), "classes": summary(&gbps_classes)},
            "connections_percent_of_plain": {"ours": summary(&rate_ours), "classes": summary(&rate_classes)},
            "apply_ms": {"clean": summary(&clean), "reapply": summary(&reapply)},
            "setups": KINDS.iter().map(|(_, key)| *key).collect::<Vec<_>>(),
        }),
        targets: vec![Target {
            name: "data plane with 50 rules and a 10,000-element set".to_string(),
            required: "within 3 points of the plain ruleset".to_string(),
            measured: format!("{gap:.1} points below"),
            met: Some(gap <= 3.0),
        }],
    }
}
