//! Rules that match by time, by source MAC and by ingress device, end to end: one config
//! whose rules each name one extra source address of the LAN host and send it to link 2;
//! what matches leaves by link 2, what does not follows the main table's default (link 1).
//! The times are written around the router's clock as the binary sees it (the namespace's
//! `date`; `utc_time` rules around UTC), so a rule matches now or not whatever the hour,
//! including windows that cross midnight. `explain` must agree with the kernel.

use std::net::{IpAddr, Ipv4Addr};

use connmark_lb::config::matches::WEEKDAYS;
use serde_json::Value;

use crate::support::addr::{ROUTER_LAN_DEVICE, link_addr};
use crate::support::checks::tcp_target;
use crate::support::lab::Lab;
use crate::support::lbconfig::{Backend, Balance, LbConfig};
use crate::support::traffic::tcp_from_each;

/// The LAN host's hardware address while this test runs.
const LAN_MAC: &str = "02:00:5e:00:53:01";

/// A moment as `date` prints it (namespaces share the clock and the environment the binary
/// runs with): seconds since midnight, weekday (0 Monday) and day of the month.
struct Now {
    seconds: u32,
    weekday: usize,
    monthday: u32,
}

fn now(utc: bool) -> Now {
    let args: &[&str] = if utc {
        &["-u", "+%H %M %S %u %d"]
    } else {
        &["+%H %M %S %u %d"]
    };
    let output = std::process::Command::new("date")
        .args(args)
        .output()
        .expect("date");
    let text = String::from_utf8_lossy(&output.stdout);
    let n: Vec<u32> = text
        .split_whitespace()
        .map(|w| w.parse().expect("date prints numbers"))
        .collect();
    Now {
        seconds: n[0] * 3600 + n[1] * 60 + n[2],
        weekday: n[3] as usize - 1,
        monthday: n[4],
    }
}

/// `HH:MM:SS` of `seconds` since midnight, taken around the clock.
fn clock(seconds: i64) -> String {
    let s = seconds.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The LAN host's source for rule `n`.
fn source(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 77, 10 + n)
}

/// A rule sending `source(n)` to link 2 when `options` match too.
fn rule(n: u8, options: &str) -> String {
    format!(
        "config rule 'r{n}'\n\toption src_ip '{}'\n{options}\toption use_policy 'wan2_only'\n\n",
        source(n)
    )
}

/// `option NAME 'VALUE'` lines.
fn options(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("\toption {name} '{value}'\n"))
        .collect()
}

/// The link the server saw each source's connection come from.
fn links(lab: &Lab, sources: &[Ipv4Addr]) -> Vec<usize> {
    tcp_from_each(&lab.topo.lan, sources, tcp_target())
        .iter()
        .map(|seen| {
            let addr = seen.as_ref().unwrap_or_else(|e| panic!("connection: {e}"));
            (1..=2)
                .find(|&l| IpAddr::from(link_addr(l)) == *addr)
                .unwrap_or_else(|| panic!("{addr} is no link's address"))
        })
        .collect()
}

/// `connmark-lb explain --json SRC SERVICE tcp PORT` with the lab's config.
fn explain(lab: &Lab, src: Ipv4Addr) -> Value {
    let target = tcp_target();
    let (ip, port) = (target.ip().to_string(), target.port().to_string());
    let src = src.to_string();
    let output = lab.topo.lb(&[
        "explain",
        "--json",
        lab.config.flag(),
        lab.config.path_str(),
        &src,
        &ip,
        "tcp",
        &port,
    ]);
    assert!(
        output.status.success(),
        "explain: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("explain prints JSON")
}

fn time_mac_and_device_rules(backend: Backend) {
    let (local, utc) = (now(false), now(true));
    let at = |now: &Now, from: i64, to: i64| {
        let base = i64::from(now.seconds);
        vec![
            ("start_time", clock(base + from)),
            ("stop_time", clock(base + to)),
        ]
    };
    let today = WEEKDAYS[local.weekday].to_string();
    let mut text = String::from(
        "config member 'm2'\n\toption interface 'wan2'\n\n\
         config policy 'wan2_only'\n\tlist use_member 'm2'\n\n",
    );
    // (rule, expected link): the window holds now, is an hour ahead, holds now on another
    // weekday, holds now in UTC.
    let mut cases = vec![
        (
            0,
            options(&at(&local, -600, 600)) + &options(&[("weekdays", today.clone())]),
            2,
        ),
        (1, options(&at(&local, 3600, 7200)), 1),
        (
            2,
            options(&at(&local, -600, 600)) + &options(&[("weekdays", format!("!{today}"))]),
            1,
        ),
        (
            3,
            options(&at(&utc, -600, 600)) + "\toption utc_time '1'\n",
            2,
        ),
    ];
    if backend == Backend::Iptables {
        let day = local.monthday;
        cases.push((4, options(&[("monthdays", day.to_string())]), 2));
        cases.push((5, options(&[("monthdays", format!("!{day}"))]), 1));
    }
    cases.extend([
        (6, options(&[("src_mac", LAN_MAC.to_uppercase())]), 2),
        (
            7,
            options(&[("src_mac", "02:00:5e:00:53:99".to_string())]),
            1,
        ),
        (8, options(&[("src_dev", ROUTER_LAN_DEVICE.to_string())]), 2),
        (9, options(&[("src_dev", "eth9".to_string())]), 1),
    ]);
    for (n, options, _) in &cases {
        text.push_str(&rule(*n, options));
    }
    let config = LbConfig::new(backend, Balance::RoundRobin, &[1, 1]).with_sections(&text);
    let lab = Lab::applied(&config);
    let sources: Vec<Ipv4Addr> = cases.iter().map(|(n, _, _)| source(*n)).collect();
    let mut script: String = sources
        .iter()
        .map(|s| format!("addr add {s}/24 dev eth0\n"))
        .collect();
    script.push_str(&format!("link set dev eth0 address {LAN_MAC}\n"));
    lab.topo.lan.ip_batch(&script);
    let expected: Vec<usize> = cases.iter().map(|(_, _, link)| *link).collect();
    assert_eq!(
        links(&lab, &sources),
        expected,
        "sources {sources:?} with rules\n{text}"
    );
    for ((n, _, link), src) in cases.iter().zip(&sources) {
        let answer = explain(&lab, *src);
        let rule = (*link == 2).then(|| format!("r{n}"));
        assert_eq!(
            answer["rule"].as_str(),
            rule.as_deref(),
            "explain {src}: {answer}"
        );
    }
    let answer = explain(&lab, source(6));
    assert_eq!(answer["source_mac"], LAN_MAC, "{answer}");
    assert_eq!(answer["ingress_device"], ROUTER_LAN_DEVICE, "{answer}");
}

for_both_backends!(time_mac_and_device_rules);
