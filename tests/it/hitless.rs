//! Hitless failover end to end: passive health and re-steering while the LAN is busy, the idle
//! link left to probes, no false alarm from loss or dead destinations, mwan3's quality checks,
//! and self-healing after our rules, ip rules or iptables chains are removed behind the
//! daemon's back. Scenarios that do not share a topology run side by side on threads.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::busy::{self, BusyRun, DESTINATIONS};
use crate::support::checks::{LinkLoad, TCP_PORT, tcp_target};
use crate::support::lab::DaemonLab;
use crate::support::lbconfig::{Backend, tracked};
use crate::support::topology::{Loss, Topology};
use crate::support::traffic::{Server, spawn_in, tcp_connections};

/// Runs `scenario` on `count` threads at once and returns what each returned.
fn side_by_side<T: Send + 'static>(count: usize, scenario: fn(usize) -> T) -> Vec<T> {
    let threads: Vec<JoinHandle<T>> = (0..count)
        .map(|i| std::thread::spawn(move || scenario(i)))
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}

/// A lab with the busy scenario's destinations; the extra servers stop first.
struct BusyLab {
    _servers: Vec<Server>,
    lab: DaemonLab,
}

fn busy_lab(options: &[(&str, &str)]) -> BusyLab {
    let lab = DaemonLab::start(&tracked(Backend::Nftables, 2, options));
    BusyLab {
        _servers: busy::add_destinations(&lab.topo),
        lab,
    }
}

fn status_path(topo: &Topology) -> std::path::PathBuf {
    topo.state_dir().join("status.json")
}

/// Issue 12's goal for a busy link, asserted on three runs: detection within 1 s, no failed
/// connection, at most 5% of the connections started in the 10 s after the failure delayed
/// more than 1 s, the slowest under 1.5 s.
#[test]
fn busy_link_fails_over_within_one_retransmission() {
    let runs: Vec<(BusyRun, String)> = side_by_side(3, |_| {
        let lab = busy_lab(&[]);
        let run = busy::run(&lab.lab.topo, status_path(&lab.lab.topo), 2, busy::AFTER);
        (run, lab.lab.daemon.log())
    });
    for (i, (run, log)) in runs.iter().enumerate() {
        eprintln!(
            "FIGURE busy link, passive health, run {}: {}",
            i + 1,
            run.summary()
        );
        let window = run.after().len();
        assert!(
            window >= 150,
            "run {i}: only {window} connections: {}",
            run.summary()
        );
        let detection = run.detection.unwrap_or(Duration::MAX);
        assert!(
            detection <= Duration::from_secs(1),
            "run {i}: detection {detection:?}\n{log}"
        );
        assert_eq!(run.failed(), 0, "run {i}: {}\n{log}", run.summary());
        let delayed = run.delayed(Duration::from_secs(1));
        assert!(
            delayed * 20 <= window,
            "run {i}: {delayed} of {window} delayed over 1 s: {}\n{log}",
            run.summary()
        );
        let slowest = run.delays().last().copied().unwrap_or_default();
        assert!(
            slowest < Duration::from_millis(1500),
            "run {i}: slowest {slowest:?}\n{log}"
        );
        for line in [
            "wan2 (wan2): suspect: ",
            "wan2 (wan2): up -> down (burst of probes after passive suspicion: 0/1 targets answered); new connections avoid it",
            "wan2: deleting its conntrack entries (disconnected)",
        ] {
            assert!(log.contains(line), "run {i}: log lacks {line:?}:\n{log}");
        }
    }
}

/// No LAN traffic: the probes alone take a dead link out within 3 s with the defaults.
#[test]
fn idle_link_is_detected_by_probes_within_three_seconds() {
    let lab = DaemonLab::start(&tracked(Backend::Nftables, 2, &[]));
    // Let a round or two pass so the failure hits an arbitrary phase.
    std::thread::sleep(Duration::from_millis(1300));
    let failed = Instant::now();
    lab.topo.add_loss(2, Loss::All);
    lab.daemon.wait_link(2, "down", Duration::from_secs(10));
    let detection = failed.elapsed();
    eprintln!("FIGURE idle link, defaults: detection {detection:?}");
    assert!(
        detection <= Duration::from_secs(3),
        "{detection:?}\n{}",
        lab.daemon.log()
    );
    let log = lab.daemon.log();
    assert!(
        !log.contains("suspect"),
        "no LAN traffic, no suspicion:\n{log}"
    );
}

/// What a no-false-alarm scenario does to the LAN and the links for a while.
fn no_false_alarm(scenario: usize) -> (String, Vec<String>, String) {
    let lab = busy_lab(&[]);
    let topo = &lab.lab.topo;
    let (what, targets): (&str, Vec<SocketAddrV4>) = match scenario {
        0 => {
            topo.add_loss(2, Loss::Percent(20));
            (
                "20% random loss on link 2",
                DESTINATIONS
                    .iter()
                    .map(|a| SocketAddrV4::new(*a, TCP_PORT))
                    .collect(),
            )
        }
        1 => {
            // One server stops answering, whichever link its connections take.
            topo.srv.nft(
                "table inet dead {
                    chain input {
                        type filter hook input priority -5;
                        ip daddr 172.31.254.1 tcp dport 7000 drop
                    }
                }",
            );
            let dead = SocketAddrV4::new(DESTINATIONS[0], TCP_PORT);
            let live = SocketAddrV4::new(DESTINATIONS[1], TCP_PORT);
            ("a server dead on every link", vec![dead, dead, dead, live])
        }
        _ => {
            // A client hammering an address nobody answers for.
            let dead = SocketAddrV4::new(Ipv4Addr::new(172, 31, 254, 99), TCP_PORT);
            let live = SocketAddrV4::new(DESTINATIONS[1], TCP_PORT);
            (
                "a client hammering a dead address",
                vec![dead, dead, dead, live],
            )
        }
    };
    let started = Instant::now();
    let mut next = 0;
    let mut states = Vec::new();
    let mut threads = Vec::new();
    while started.elapsed() < Duration::from_secs(12) {
        let target = targets[next % targets.len()];
        next += 1;
        threads.push(spawn_in(&topo.lan, move || {
            let _ = std::net::TcpStream::connect_timeout(&target.into(), Duration::from_secs(2));
        }));
        if next % 4 == 0 {
            let link = lab.lab.daemon.link(2);
            states.push(format!("{}", link["state"]));
        }
        std::thread::sleep(busy::SPACING);
    }
    for thread in threads {
        let _ = thread.join();
    }
    (what.to_string(), states, lab.lab.daemon.log())
}

/// Random loss, a server dead on every link, a client hammering a dead address: none of them
/// takes a link down, with passive health on and the LAN busy.
#[test]
fn no_false_alarms() {
    for (what, states, log) in side_by_side(3, no_false_alarm) {
        let suspicions = log.matches("suspect:").count();
        eprintln!("FIGURE no false alarm, {what}: {suspicions} suspicions, all cleared");
        assert!(
            states.iter().all(|s| s == "\"up\"" || s == "\"failing\""),
            "{what}: link 2 left use: {states:?}\n{log}"
        );
        assert!(!log.contains("-> down"), "{what}:\n{log}");
    }
}

/// `check_quality`: a link that still answers some probes but loses 90% leaves the balancing.
#[test]
fn check_quality_takes_a_lossy_link_out() {
    let lab = DaemonLab::start(&tracked(
        Backend::Nftables,
        2,
        &[("check_quality", "1"), ("passive", "0")],
    ));
    lab.topo.add_loss(2, Loss::Percent(90));
    lab.daemon.wait_link(2, "down", Duration::from_secs(20));
    let status = lab.daemon.link(2);
    assert!(
        status["window_loss_percent"]
            .as_u64()
            .is_some_and(|l| l >= 40),
        "{status}"
    );
    let tally = tcp_connections(&lab.topo.lan, tcp_target(), 20);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
}

/// Waits (bounded by `within`) until `back` says what was removed is there again, then checks
/// that new connections are balanced 1:1; returns how long it took to come back.
fn healed(lab: &DaemonLab, within: Duration, back: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !back() {
        assert!(
            started.elapsed() < within,
            "not back after {within:?}:\n{}",
            lab.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    let tally = tcp_connections(&lab.topo.lan, tcp_target(), 20);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    LinkLoad::from_tally(&lab.topo, &tally).assert_shares("after self-healing", &[1, 1], 5.0);
    took
}

/// The daemon's re-apply count, once it has been quiet for a while.
fn reapplies_after_quiet(lab: &DaemonLab) -> u64 {
    std::thread::sleep(Duration::from_millis(700));
    lab.daemon.status().expect("status.json")["reapplies"]
        .as_u64()
        .expect("reapplies in status.json")
}

/// The daemon has re-applied `count` times in all, and its log says `says`.
fn assert_reapplied(lab: &DaemonLab, count: u64, says: &str) {
    assert_eq!(reapplies_after_quiet(lab), count, "{}", lab.daemon.log());
    let log = lab.daemon.log();
    assert!(log.contains(says), "{log}");
}

/// `nft flush ruleset`, deleting our ip rules, flushing a link's routing table: each time the
/// daemon applies again within a second, once, and says what was missing.
#[test]
fn self_heals_after_nft_flush_and_deleted_ip_rules() {
    let lab = DaemonLab::start(&tracked(Backend::Nftables, 2, &[]));
    let table = || lab.topo.router.run("nft list ruleset");
    let ruleset = table();
    lab.topo.router.run("nft flush ruleset");
    let took = healed(&lab, Duration::from_secs(1), || table() == ruleset);
    eprintln!("FIGURE self-healing after nft flush ruleset: rules back after {took:?}");
    assert_reapplied(
        &lab,
        1,
        "our rules changed behind our back (nft table inet connmark_lb deleted): applying again",
    );

    let rules = lab.topo.router.run("ip -4 rule show");
    let ours: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.split(':').next())
        .filter(|prio| prio.parse::<u32>().is_ok_and(|p| (4000..4512).contains(&p)))
        .collect();
    assert!(ours.len() >= 3, "{rules}");
    let script: String = ours
        .iter()
        .map(|prio| format!("rule del priority {prio}\n"))
        .collect();
    lab.topo.router.ip_batch(&script);
    let took = healed(&lab, Duration::from_secs(1), || {
        lab.topo.router.run("ip -4 rule show") == rules
    });
    eprintln!("FIGURE self-healing after deleting our ip rules: back after {took:?}");
    assert_reapplied(&lab, 2, "ip rule 4001 deleted");

    let route = || lab.topo.router.run("ip -4 route show table 4002");
    let before = route();
    assert!(before.contains("default via"), "{before}");
    lab.topo.router.run("ip route flush table 4002");
    let took = healed(&lab, Duration::from_secs(1), || route() == before);
    eprintln!("FIGURE self-healing after flushing a link's table: back after {took:?}");
    assert_reapplied(&lab, 3, "route in table 4002 deleted");
}

/// With the iptables backend, `iptables -t mangle -F` removes our jumps and chain contents:
/// back within a second, one re-apply.
#[test]
fn self_heals_after_iptables_mangle_flush() {
    let lab = DaemonLab::start(&tracked(Backend::Iptables, 2, &[]));
    // The rules without counters and comments.
    let mangle = || -> String {
        lab.topo
            .router
            .run("iptables-save -t mangle")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{}\n", l.split(" [").next().unwrap_or(l)))
            .collect()
    };
    let before = mangle();
    lab.topo.router.run("iptables -t mangle -F");
    let took = healed(&lab, Duration::from_secs(1), || mangle() == before);
    eprintln!("FIGURE self-healing after iptables -t mangle -F: back after {took:?}");
    assert_reapplied(&lab, 1, "of iptables table mangle deleted");
}

/// Another program that deletes our table whenever it sees it: the daemon re-applies a few
/// times, then says so once and pauses; no storm.
#[test]
fn self_healing_does_not_loop_with_another_tool() {
    let lab = DaemonLab::start(&tracked(Backend::Nftables, 2, &[]));
    let pause = "another program keeps changing our rules";
    let fight = || {
        let _ = lab
            .topo
            .router
            .output("nft", &["delete", "table", "inet", "connmark_lb"], None);
        std::thread::sleep(Duration::from_millis(150));
    };
    // Until the daemon gives up for now (bounded), then 2 s more of the same.
    let started = Instant::now();
    while !lab.daemon.log().contains(pause) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no pause:\n{}",
            lab.daemon.log()
        );
        fight();
    }
    let paused_after = started.elapsed();
    let more = Instant::now();
    while more.elapsed() < Duration::from_secs(2) {
        fight();
    }
    let reapplies = reapplies_after_quiet(&lab);
    let log = lab.daemon.log();
    eprintln!(
        "FIGURE self-healing against a tool deleting our table every 150 ms: paused after \
         {paused_after:?} and {reapplies} re-applies, none during 2 s more of it"
    );
    assert_eq!(reapplies, 5, "{log}");
    assert_eq!(log.matches(pause).count(), 1, "{log}");
}
