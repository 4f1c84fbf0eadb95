//! `connmark-lb run` end to end: the daemon on the router of the test topology tracks every
//! link with ICMP probes to the server, an ISP fails silently (its loss rule drops everything
//! from the router while every device stays up), and new connections from the LAN host show
//! which links are in use. Detection and recovery are measured from the moment the ISP rule
//! changes to the first new connection that behaves accordingly, and printed as FIGURE lines.

use std::net::{Ipv4Addr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::addr::link_addr;
use crate::support::busy;
use crate::support::checks::{LinkLoad, tcp_target};
use crate::support::daemon::{SLACK, Timing};
use crate::support::lab::DaemonLab;
use crate::support::lbconfig::{Backend, Balance, LbConfig, tracked};
use crate::support::long::LongConnection;
use crate::support::topology::{Loss, Topology};
use crate::support::traffic::{spawn_in, tcp_connections};

/// New connections are started this far apart while a change is measured.
const SPACING: Duration = Duration::from_millis(25);
/// How long a measuring connection may take to connect: enough for one SYN retransmission.
const ATTEMPT_CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// A connection whose handshake took longer lost its first SYN: it was sent to a dead link.
const SLOW_CONNECT: Duration = Duration::from_millis(500);

/// The link whose SNAT address is `addr`.
fn link_of(addr: Ipv4Addr) -> Option<usize> {
    (1..=9).find(|&link| link_addr(link) == addr)
}

/// One new connection made while a change was measured.
#[derive(Debug)]
struct Attempt {
    started: Instant,
    took: Duration,
    /// The link the server saw, or the error.
    link: Result<usize, String>,
}

impl Attempt {
    /// Whether the connection's first SYN went out a dead link: it failed, or it needed a
    /// retransmission.
    fn hit_dead_link(&self) -> bool {
        self.link.is_err() || self.took > SLOW_CONNECT
    }
}

/// Starts a new connection from the LAN host every [`SPACING`] for `duration`, each on its own
/// thread; runs `event` once, `event_at` after the start, and returns when it ran together
/// with every attempt.
fn attempts_around(
    topo: &Topology,
    duration: Duration,
    event_at: Duration,
    event: impl FnOnce(),
) -> (Instant, Vec<Attempt>) {
    let start = Instant::now();
    let mut event = Some(event);
    let mut event_time = None;
    let mut threads: Vec<JoinHandle<Attempt>> = Vec::new();
    while start.elapsed() < duration {
        if start.elapsed() >= event_at {
            if let Some(event) = event.take() {
                event();
                event_time = Some(Instant::now());
            }
        }
        threads.push(spawn_in(&topo.lan, one_attempt));
        std::thread::sleep(SPACING);
    }
    let attempts = threads
        .into_iter()
        .map(|t| t.join().expect("attempt thread panicked"))
        .collect();
    (event_time.expect("event ran"), attempts)
}

fn one_attempt() -> Attempt {
    let started = Instant::now();
    let link = busy::greeting(tcp_target(), ATTEMPT_CONNECT_TIMEOUT).and_then(|(took, line)| {
        let addr: Ipv4Addr = line.trim().parse().map_err(|e| format!("{line:?}: {e}"))?;
        link_of(addr)
            .map(|link| (link, took))
            .ok_or(format!("unknown address {addr}"))
    });
    match link {
        Ok((link, took)) => Attempt {
            started,
            took,
            link: Ok(link),
        },
        Err(e) => Attempt {
            started,
            took: started.elapsed(),
            link: Err(e),
        },
    }
}

/// Link 2 fails silently, then heals; returns (detection, recovery) and checks that 200 new
/// connections after detection all succeed on the live link.
fn fail_and_heal_link_2(lab: &DaemonLab, timing: &Timing, what: &str) -> (Duration, Duration) {
    let topo = &lab.topo;
    let settle = timing.detection_bound() + SLACK + Duration::from_secs(2);
    let (failed_at, attempts) = attempts_around(
        topo,
        settle + Duration::from_secs(1),
        Duration::from_secs(1),
        || topo.add_loss(2, Loss::All),
    );
    let dead: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.started >= failed_at && a.hit_dead_link())
        .collect();
    assert!(
        !dead.is_empty(),
        "no connection noticed the failure: {attempts:?}"
    );
    assert!(
        attempts
            .iter()
            .filter(|a| a.started + a.took < failed_at)
            .all(|a| !a.hit_dead_link()),
        "connections suffered before the failure: {attempts:?}"
    );
    let detection = dead
        .iter()
        .map(|a| a.started.duration_since(failed_at))
        .max()
        .unwrap_or_default();
    assert_eq!(lab.daemon.link(2)["state"], "down", "{}", lab.daemon.log());

    let tally = tcp_connections(&topo.lan, tcp_target(), 200);
    assert_eq!(tally.failures, 0, "after detection: {:?}", tally.errors);
    assert_eq!(
        tally.count(link_addr(1)),
        200,
        "after detection every new connection uses link 1: {:?}",
        tally.seen
    );

    let settle = timing.recovery_bound() + SLACK + Duration::from_secs(2);
    let (healed_at, attempts) = attempts_around(
        topo,
        settle + Duration::from_secs(1),
        Duration::from_millis(500),
        || topo.clear_loss(2),
    );
    let recovery = attempts
        .iter()
        .filter(|a| a.started >= healed_at && a.link == Ok(2))
        .map(|a| a.started.duration_since(healed_at))
        .min()
        .unwrap_or_else(|| panic!("link 2 never came back: {}", lab.daemon.log()));
    let late = attempts
        .iter()
        .filter(|a| a.started >= healed_at + recovery);
    assert!(
        late.clone().all(|a| a.link.is_ok()),
        "a connection failed after recovery"
    );
    assert_eq!(lab.daemon.link(2)["state"], "up");

    eprintln!(
        "FIGURE failover {what}: detection {:.2} s (bound {:.2} s), recovery {:.2} s (bound {:.2} s)",
        detection.as_secs_f64(),
        timing.detection_bound().as_secs_f64(),
        recovery.as_secs_f64(),
        timing.recovery_bound().as_secs_f64()
    );
    timing.assert_detection(what, detection);
    timing.assert_recovery(what, recovery);
    (detection, recovery)
}

#[test]
fn silent_failure_with_defaults_is_detected_and_healed() {
    // Passive health off: this measures the probes alone (tests/it/hitless.rs has both).
    let lab = DaemonLab::start(&tracked(Backend::Nftables, 2, &[("passive", "0")]));
    let long = LongConnection::on_link(&lab.topo, 1);
    let timing = Timing::with_interval(Duration::from_secs(1));
    fail_and_heal_link_2(&lab, &timing, "defaults");

    let (answered, peers) = long
        .finish()
        .unwrap_or_else(|e| panic!("the long connection on link 1 broke: {e}"));
    assert!(answered > 50, "only {answered} answers");
    assert_eq!(peers, [link_addr(1)], "the long connection changed link");

    assert_eq!(
        lab.hook_lines(),
        [
            "disconnected wan2 wan2 wan2 down",
            "connected wan2 wan2 wan2 up"
        ],
        "the hook ran once per change, with the event in env and arguments"
    );
    let log = lab.daemon.log();
    lab.daemon.assert_logged(&[
        "wan2 (wan2): up -> failing (0/1 targets answered, 100% lost)",
        "wan2 (wan2): failing -> down (0/1 targets answered, 100% lost); new connections avoid it",
        "wan2: deleting its conntrack entries (disconnected)",
        "wan2 (wan2): down -> recovering (1/1 targets answered, 0% lost)",
        "wan2 (wan2): recovering -> up (1/1 targets answered, 0% lost); new connections use it again",
    ]);
    assert!(
        !log.contains("wan1 (wan1):"),
        "link 1 never changed:\n{log}"
    );
}

#[test]
fn silent_failure_with_half_second_interval() {
    let lab = DaemonLab::start(&tracked(
        Backend::Nftables,
        2,
        &[("interval", "0.5"), ("passive", "0")],
    ));
    let timing = Timing::with_interval(Duration::from_millis(500));
    fail_and_heal_link_2(&lab, &timing, "interval 0.5 s");
}

/// A link without `track_ip` is up exactly while its device is: taking the router's device
/// down (the kernel drops its routes) moves new connections off it; bringing it back restores
/// its route and its share.
#[test]
fn untracked_link_follows_its_device() {
    let lab = DaemonLab::start(&LbConfig::new(
        Backend::Nftables,
        Balance::RoundRobin,
        &[1, 1],
    ));
    assert_eq!(lab.daemon.link(2)["tracked"], false);
    lab.topo.router.run("ip link set wan2 down");
    lab.daemon.wait_link(2, "down", Duration::from_secs(5));
    let tally = tcp_connections(&lab.topo.lan, tcp_target(), 50);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    assert_eq!(tally.count(link_addr(1)), 50, "{:?}", tally.seen);

    lab.topo.router.run("ip link set wan2 up");
    lab.daemon.wait_link(2, "up", Duration::from_secs(5));
    let tally = tcp_connections(&lab.topo.lan, tcp_target(), 100);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    LinkLoad::from_tally(&lab.topo, &tally).assert_shares(
        "tcp after the untracked link's device came back",
        &[1, 1],
        2.0,
    );
    lab.daemon.assert_logged(&[
        "wan2 (wan2): up -> down (device down); new connections avoid it",
        "wan2 (wan2): down -> up (device up); new connections use it again",
    ]);
    assert_eq!(
        lab.hook_lines(),
        [
            "disconnected wan2 wan2 wan2 down",
            "connected wan2 wan2 wan2 up"
        ]
    );
}

/// The conntrack marks (under the default mask) of the router's entries for connections from
/// the LAN host, counted per link number.
fn lan_entries_per_link(topo: &Topology) -> Vec<usize> {
    let listing = topo.router.run("conntrack -L -s 192.168.77.2");
    let mut counts = vec![0; topo.link_count() + 1];
    for line in listing.lines() {
        let mark: u32 = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("mark="))
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let link = ((mark & 0x3f00) >> 8) as usize;
        if let Some(count) = counts.get_mut(link) {
            *count += 1;
        }
    }
    counts
}

#[test]
fn only_the_dead_links_conntrack_entries_are_deleted() {
    let config = tracked(Backend::Nftables, 3, &[]).with_option("wan3", "flush_conntrack", "never");
    let lab = DaemonLab::start(&config);
    let topo = &lab.topo;
    let tally = tcp_connections(&topo.lan, tcp_target(), 30);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    let before = lan_entries_per_link(topo);
    assert_eq!(before[0], 0, "every LAN connection is marked: {before:?}");
    assert!(before[1..].iter().all(|&n| n >= 10), "{before:?}");

    topo.add_loss(2, Loss::All);
    topo.add_loss(3, Loss::All);
    lab.daemon.wait_link(2, "down", Duration::from_secs(10));
    lab.daemon.wait_link(3, "down", Duration::from_secs(10));
    // The deleting runs in the daemon's loop after the state change: wait for its report.
    lab.daemon
        .wait_log("wan2: deleted ", Duration::from_secs(5));
    lab.daemon
        .wait_log("wan3: deleted 0 conntrack entries", Duration::from_secs(5));
    let after = lan_entries_per_link(&lab.topo);
    assert_eq!(
        after,
        [0, before[1], 0, before[3]],
        "link 2's entries are deleted, link 1's stay, link 3 (flush_conntrack never) keeps its own"
    );
    let log = lab.daemon.log();
    assert!(
        log.contains("wan2: deleting its conntrack entries (disconnected)"),
        "{log}"
    );
    assert!(!log.contains("wan3: deleting its conntrack"), "{log}");
    assert!(
        log.contains("wan3: deleting its unanswered connections"),
        "a link leaving use always loses its unanswered connections:\n{log}"
    );
}

#[test]
fn twenty_percent_loss_does_not_flap_with_defaults() {
    let lab = DaemonLab::start(&tracked(Backend::Nftables, 2, &[]));
    lab.topo.add_loss(2, Loss::Percent(20));
    let before = lab.topo.isp_counters(2);
    let run = Duration::from_secs(20);
    let started = Instant::now();
    let mut states = std::collections::BTreeSet::new();
    while started.elapsed() < run {
        let link = lab.daemon.link(2);
        states.insert(link["state"].as_str().unwrap_or_default().to_string());
        assert_eq!(
            link["usable"],
            true,
            "link 2 flapped:\n{}",
            lab.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let lost = lab.topo.isp_counters(2).since(before).lost;
    eprintln!(
        "FIGURE no flapping: 20% loss on link 2 for {} s: {lost} probe packets lost, states seen {states:?}",
        run.as_secs()
    );
    // Only probes cross ISP 2 in this test, so these are lost probes.
    assert!(lost >= 5, "the loss rule dropped only {lost} packets");
    assert!(
        !lab.daemon.log().contains("-> down"),
        "{}",
        lab.daemon.log()
    );
    lab.daemon.wait_all("up", Duration::from_secs(10));
}

/// How a connection attempt to the server failed, and how fast.
fn refused_fast(topo: &Topology) -> (std::io::ErrorKind, Duration) {
    let handle = spawn_in(&topo.lan, || {
        let started = Instant::now();
        let result = TcpStream::connect_timeout(&tcp_target().into(), Duration::from_secs(3));
        (result.map(drop), started.elapsed())
    });
    let (result, took) = handle.join().expect("connect thread panicked");
    let error = result.expect_err("no link is up, yet the connection succeeded");
    (error.kind(), took)
}

/// Every link dies: the implicit policy's `last_resort unreachable` answers new connections
/// at once; when the links come back, new connections are balanced again.
fn all_links_down_then_back(backend: Backend) {
    let lab = DaemonLab::start(&tracked(backend, 2, &[]));
    for link in 1..=2 {
        lab.topo.add_loss(link, Loss::All);
    }
    lab.daemon.wait_all("down", Duration::from_secs(10));
    let (kind, took) = refused_fast(&lab.topo);
    assert!(
        matches!(
            kind,
            std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable
        ),
        "expected unreachable, got {kind:?}"
    );
    assert!(took < Duration::from_millis(500), "refusal took {took:?}");

    for link in 1..=2 {
        lab.topo.clear_loss(link);
    }
    lab.daemon.wait_all("up", Duration::from_secs(15));
    let tally = tcp_connections(&lab.topo.lan, tcp_target(), 100);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    LinkLoad::from_tally(&lab.topo, &tally).assert_shares(
        &format!("{} tcp after all links came back", backend.name()),
        &[1, 1],
        2.0,
    );
    let status = lab.topo.lb(&["status"]);
    assert!(status.status.success(), "{status:?}");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status prints JSON");
    assert_eq!(status["links"][1]["interface"], "wan2");
    assert_eq!(status["links"][1]["state"], "up");
    assert_eq!(status["links"][1]["tracked"], true);
}

#[test]
fn all_links_down_nftables() {
    all_links_down_then_back(Backend::Nftables);
}

#[test]
fn all_links_down_iptables() {
    all_links_down_then_back(Backend::Iptables);
}

/// SIGHUP re-reads the config and re-applies while link 2 stays down (health is kept, not
/// reset to `initial_state`); the new weights apply once it is back. SIGTERM exits 0 and
/// leaves the rules; status.json goes with the daemon.
#[test]
fn reload_keeps_health_and_sigterm_keeps_the_rules() {
    let lab = DaemonLab::start(&tracked(Backend::Nftables, 2, &[]));
    lab.topo.add_loss(2, Loss::All);
    lab.daemon.wait_link(2, "down", Duration::from_secs(10));
    let down_since = lab.daemon.link(2)["last_change"].clone();

    let reweighted = tracked(Backend::Nftables, 2, &[]).with_option("wan2", "weight", "3");
    lab.topo.write_config("lb", &reweighted);
    lab.daemon.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.daemon.log().contains("reloaded:") {
        assert!(
            Instant::now() < deadline,
            "no reload:\n{}",
            lab.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let link = lab.daemon.link(2);
    assert_eq!(link["state"], "down", "reload forgot link 2's health");
    assert_eq!(link["last_change"], down_since);
    let tally = tcp_connections(&lab.topo.lan, tcp_target(), 50);
    assert_eq!(tally.count(link_addr(1)), 50, "{tally:?}");

    lab.topo.clear_loss(2);
    lab.daemon.wait_link(2, "up", Duration::from_secs(15));
    let tally = tcp_connections(&lab.topo.lan, tcp_target(), 200);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    LinkLoad::from_tally(&lab.topo, &tally).assert_shares(
        "tcp after reload with weights 1:3",
        &[1, 3],
        2.0,
    );

    let rules = lab.topo.router_state();
    lab.daemon.signal(Signal::SIGTERM);
    let exit = lab.daemon.wait_exit(Duration::from_secs(5));
    assert!(exit.success(), "{exit}");
    assert!(
        lab.daemon.status().is_none(),
        "status.json outlived the daemon"
    );
    assert_eq!(
        lab.topo.router_state().differences(&rules),
        None,
        "SIGTERM changed the rules"
    );
    let status = lab.topo.lb(&["status"]);
    assert_eq!(status.status.code(), Some(1), "{status:?}");
}

/// A value in kB from /proc/<pid>/status.
fn proc_status_kb(pid: Pid, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Four links probed every second: the daemon's memory and CPU over a bounded run.
#[test]
fn footprint_tracking_four_links() {
    let lab = DaemonLab::start(&tracked(Backend::Nftables, 4, &[]));
    let pid = lab.daemon.pid();
    let run = Duration::from_secs(20);
    let cpu_before = busy::cpu_time(pid.as_raw());
    let started = Instant::now();
    std::thread::sleep(run);
    let cpu = busy::cpu_time(pid.as_raw()) - cpu_before;
    let elapsed = started.elapsed();
    let rss = proc_status_kb(pid, "VmRSS");
    let hwm = proc_status_kb(pid, "VmHWM");
    let percent = 100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64();
    let probes = lab.topo.srv_icmp_requests();
    eprintln!(
        "FIGURE daemon footprint, 4 links at 1 s: VmRSS {rss} kB, VmHWM {hwm} kB, CPU {:.2} s in {:.1} s = {percent:.3}%, probes seen per link {probes:?}",
        cpu.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    lab.daemon.wait_all("up", Duration::from_secs(5));
    assert!(
        probes.iter().all(|&n| n >= 3 * 18),
        "every link probed every second: {probes:?}"
    );
    assert!(hwm < 16 * 1024, "VmHWM {hwm} kB");
    assert!(percent < 2.0, "CPU {percent:.3}%");
}
