//! What nft itself costs on this kernel for our 2-link ruleset, step by step: the figures that
//! explain the apply time (a transaction that deletes anything waits for the kernel to release
//! the old objects before nft exits).

use std::path::Path;
use std::process::Command;

use crate::Options;
use crate::lbconfig::{Backend, Balance, LbConfig};
use crate::measure::{self, Invocation, Summary};
use crate::router::{Router, path_str};
use crate::topology::Topology;

/// One nft invocation and its wall time.
#[derive(Debug, Clone)]
pub struct NftStep {
    pub step: &'static str,
    pub wall_ms: Summary,
}

/// Times each step `options.runs` times on a 2-link router.
pub fn measure(options: &Options) -> Vec<NftStep> {
    let topo = Topology::new(2);
    let router = Router::new(&topo, &options.binary, &options.seed_script);
    let rules = topo
        .dir
        .write("rules.nft", &nft_rules(&topo, &options.binary));
    let nft = |args: &[&str]| Invocation::new("nft", args, topo.dir.path());
    let load = nft(&["-f", path_str(&rules)]);
    let steps: [(&'static str, bool, Invocation); 3] = [
        (
            "nft list table (one nft process, no transaction), table present",
            true,
            nft(&["list", "table", "inet", "connmark_lb"]),
        ),
        (
            "nft -f as apply sends it, table absent",
            false,
            load.clone(),
        ),
        (
            "nft -f as apply sends it, table present (every rule replaced)",
            true,
            load.clone(),
        ),
    ];
    let mut samples = vec![Vec::new(); steps.len()];
    for _ in 0..options.runs {
        crate::check_interrupted();
        for (index, (_, present, invocation)) in steps.iter().enumerate() {
            router.reset();
            if *present {
                measure::timed(&topo.router, &load);
            }
            let timed = measure::timed(&topo.router, invocation);
            samples[index].push(timed.wall.as_secs_f64() * 1000.0);
        }
    }
    router.reset();
    steps
        .iter()
        .zip(samples)
        .map(|((step, _, _), ms)| NftStep {
            step,
            wall_ms: Summary::of(&ms),
        })
        .collect()
}

/// The nft text `apply` loads for 2 links, as `check` prints it.
fn nft_rules(topo: &Topology, binary: &Path) -> String {
    let config = topo.write_config(
        "nft-cost",
        &LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1, 1]),
    );
    let output = Command::new(binary)
        .args(["check", config.flag(), config.path_str()])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    assert!(
        output.status.success(),
        "check failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let rules = text
        .split_once("# nftables rules\n")
        .and_then(|(_, rest)| rest.split_once("# ip -batch\n"))
        .map(|(rules, _)| rules.to_string());
    rules.unwrap_or_else(|| panic!("no nftables rules in the check output:\n{text}"))
}
