//! DNS that follows the link, end to end: each ISP runs a resolver (the real dnsmasq) that is
//! reachable only through that ISP and answers only its customer; the router's dnsmasq
//! forwards to both without a cache, as OpenWrt's does with the links' servers; the LAN host
//! asks the router. The router runs two forwarders, one asking ISP 1's resolver first and one
//! ISP 2's (`--strict-order`: the next only when the first fails), so each failure hits one
//! that keeps asking the dead link's server. `connmark-lb run` tracks both links (0.5 s interval) and each link lists
//! its ISP's resolver (`list dns`). Every lookup must be answered within 1 s while both links
//! are up and within 2 s once a silent failure of either link is detected, with the router's
//! own traffic balanced (`local_traffic 1`) or not; the LAN host's own queries to an ISP's
//! resolver (forwarded, not asked of the router) too. The time from a failure to the moment
//! lookups are answered again is printed as a FIGURE line.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use crate::support::addr::{ROUTER_LAN, link_device};
use crate::support::dns::{
    Dnsmasq, READY, answered_by, ask, ask_in, fresh_name, resolve_at, resolver,
};
use crate::support::lab::DaemonLab;
use crate::support::lbconfig::{Backend, tracked};
use crate::support::topology::Loss;
use crate::support::traffic::spawn_in;

/// Lookups per phase.
const LOOKUPS: usize = 30;
/// While both links are up, every lookup is answered within this.
const UP_ANSWER: Duration = Duration::from_secs(1);
/// Once a failure is detected, every lookup is answered within this.
const FAILED_ANSWER: Duration = Duration::from_secs(2);
/// How long a link may take to be taken out or back (0.5 s interval: well under this).
const DETECTION: Duration = Duration::from_secs(10);
/// Lookups are started this far apart while a failure is measured.
const SPACING: Duration = Duration::from_millis(100);

/// The router's resolver that asks ISP `first`'s resolver first.
fn router(first: usize) -> SocketAddrV4 {
    SocketAddrV4::new(ROUTER_LAN, if first == 1 { 53 } else { 5353 })
}

/// [`LOOKUPS`] lookups at each of the router's resolvers, each answered within `within`;
/// every answer from ISP `by`'s resolver when given.
fn router_lookups(lab: &DaemonLab, within: Duration, by: Option<usize>, what: &str) {
    for first in 1..=2 {
        let answered = lookups(lab, router(first), LOOKUPS, within);
        assert!(
            by.is_none_or(|by| answered.iter().all(|&l| l == by)),
            "{what}: resolver asking ISP {first} first: {answered:?}"
        );
    }
}

/// 10 lookups of the LAN host at ISP `isp`'s resolver (forwarded by the router), each
/// answered within `within`, every answer from ISP `by`'s resolver.
fn direct_lookups(lab: &DaemonLab, isp: usize, within: Duration, by: usize, what: &str) {
    let answered = lookups(lab, SocketAddrV4::new(resolver(isp), 53), 10, within);
    assert!(
        answered.iter().all(|&l| l == by),
        "{what}: the LAN host asking ISP {isp}'s resolver: {answered:?}"
    );
}

/// `count` lookups of [`NAME`] from the LAN host at `server`, one after the other; each must
/// be answered within `within`. Returns the links whose resolvers answered, in order.
fn lookups(lab: &DaemonLab, server: SocketAddrV4, count: usize, within: Duration) -> Vec<usize> {
    spawn_in(&lab.topo.lan, move || {
        (0..count)
            .map(|i| match ask(server, &fresh_name(), within) {
                Ok((addr, _)) => answered_by(addr)
                    .unwrap_or_else(|| panic!("lookup {i}: {addr} is no ISP's answer")),
                Err(e) => panic!("lookup {i} of {count} at {server}: {e}"),
            })
            .collect()
    })
    .join()
    .unwrap_or_else(|_| panic!("lookups failed:\n{}", lab.daemon.log()))
}

/// Link `link` fails silently while lookups at the resolver that asks it first start every
/// [`SPACING`], until a second after the daemon took it out. Returns how long after the failure lookups were answered again
/// (from the start of the first lookup after the last unanswered one), and the counts.
fn fail_measured(lab: &DaemonLab, link: usize) -> (Duration, usize, usize) {
    let failed_at = Instant::now();
    lab.topo.add_loss(link, Loss::All);
    let mut started = Vec::new();
    let mut down_at: Option<Instant> = None;
    while down_at.is_none_or(|at| at.elapsed() < Duration::from_secs(1)) {
        assert!(
            failed_at.elapsed() < DETECTION,
            "link {link} never went down:\n{}",
            lab.daemon.log()
        );
        if down_at.is_none() && lab.daemon.link(link)["state"] == "down" {
            down_at = Some(Instant::now());
        }
        let at = Instant::now();
        started.push((
            at,
            spawn_in(&lab.topo.lan, move || {
                ask(router(link), &fresh_name(), FAILED_ANSWER)
            }),
        ));
        std::thread::sleep(SPACING);
    }
    let results: Vec<(Instant, bool)> = started
        .into_iter()
        .map(|(at, thread)| (at, thread.join().expect("lookup thread").is_ok()))
        .collect();
    let unanswered = results.iter().filter(|(_, ok)| !ok).count();
    let last_failure = results.iter().rposition(|(_, ok)| !ok);
    let recovered = match last_failure {
        None => Duration::ZERO,
        Some(i) => {
            let (next, _) = results
                .get(i + 1)
                .unwrap_or_else(|| panic!("the last lookup of the window went unanswered"));
            next.duration_since(failed_at)
        }
    };
    (recovered, unanswered, results.len())
}

fn dns_follows_the_link(backend: Backend, local_traffic: bool) {
    let mut config = tracked(backend, 2, &[("interval", "0.5")]).with_option(
        "globals",
        "local_traffic",
        if local_traffic { "1" } else { "0" },
    );
    for link in 1..=2 {
        config = config.with_option(&link_device(link), "dns", &resolver(link).to_string());
    }
    let lab = DaemonLab::start(&config);
    let topo = &lab.topo;
    let _resolvers = Dnsmasq::isp_resolvers(topo);
    let _forwarders = [1, 2].map(|first| Dnsmasq::router_forwarder(topo, router(first), first));
    Dnsmasq::wait_isp_resolvers(topo);
    for first in 1..=2 {
        assert!(
            resolve_at(&topo.lan, router(first), READY),
            "router resolver {first}"
        );
    }
    let what = format!(
        "{} local_traffic {}",
        backend.name(),
        u8::from(local_traffic)
    );

    // Both links up: the router's queries and the LAN host's own leave by the right ISP.
    for first in 1..=2 {
        let answered = lookups(&lab, router(first), LOOKUPS, UP_ANSWER);
        assert!(answered.iter().all(|&l| l == first), "{what}: {answered:?}");
    }
    for link in 1..=2 {
        direct_lookups(&lab, link, UP_ANSWER, link, &what);
    }

    // Link 1 fails silently: once that is detected, its resolver's queries go to ISP 2's.
    let (recovered, unanswered, total) = fail_measured(&lab, 1);
    eprintln!(
        "FIGURE dns {what}: lookups answered again {:.2} s after link 1 failed ({unanswered} of {total} unanswered in between)",
        recovered.as_secs_f64()
    );
    router_lookups(&lab, FAILED_ANSWER, Some(2), &what);
    direct_lookups(&lab, 1, FAILED_ANSWER, 2, &what);

    // Link 1 heals, link 2 fails.
    topo.clear_loss(1);
    lab.daemon.wait_link(1, "up", DETECTION);
    assert!(
        ask_in(&topo.lan, router(1), &fresh_name(), UP_ANSWER)
            .is_ok_and(|(a, _)| answered_by(a) == Some(1)),
        "{what}: ISP 1's resolver answers for itself again"
    );
    topo.add_loss(2, Loss::All);
    lab.daemon.wait_link(2, "down", DETECTION);
    router_lookups(&lab, FAILED_ANSWER, Some(1), &what);
    direct_lookups(&lab, 2, FAILED_ANSWER, 1, &what);
}

fn balanced_router(backend: Backend) {
    dns_follows_the_link(backend, true);
}

fn unbalanced_router(backend: Backend) {
    dns_follows_the_link(backend, false);
}

for_both_backends!(balanced_router, unbalanced_router);
