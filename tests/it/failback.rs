//! Failback: link 1 is the primary (metric 1), link 2 the backup (metric 2). Link 1 fails, a
//! long connection opens on link 2, link 1 returns and takes the new connections; what then
//! happens to the long connection is the policy's `failback`: `keep` leaves it on link 2,
//! `kill` breaks it at once, `drain` after `drain_timeout`.

use std::time::{Duration, Instant};

use crate::support::lab::DaemonLab;
use crate::support::lbconfig::{Backend, tracked};
use crate::support::long::LongConnection;
use crate::support::topology::Loss;

/// The drain timeout of the `drain` case.
const DRAIN: Duration = Duration::from_secs(4);
/// How long the connection is watched after link 1 is back.
const WATCH: Duration = Duration::from_secs(9);

/// Runs the scenario with `options` on the policy; returns how long after link 1 was back in
/// use the long connection broke (None: it lived through the watch).
fn failback_with(options: &str) -> Option<Duration> {
    let sections = format!(
        "
config member 'm1'
	option interface 'wan1'

config member 'm2'
	option interface 'wan2'
	option metric '2'

config policy 'main'
	list use_member 'm1'
	list use_member 'm2'
{options}
"
    );
    let lab = DaemonLab::start(&tracked(Backend::Nftables, 2, &[]).with_sections(&sections));
    let topo = &lab.topo;
    topo.add_loss(1, Loss::All);
    lab.daemon.wait_link(1, "down", Duration::from_secs(10));
    let long = LongConnection::on_link(topo, 2);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !long.broke(),
        "the connection on link 2 broke before failback"
    );

    topo.clear_loss(1);
    lab.daemon.wait_link(1, "up", Duration::from_secs(15));
    let back = Instant::now();
    while !long.broke() && back.elapsed() < WATCH {
        std::thread::sleep(Duration::from_millis(50));
    }
    let broke_after = long.broke().then(|| back.elapsed());
    match long.finish() {
        Ok((answered, peers)) => {
            assert!(broke_after.is_none());
            assert!(answered > 50, "only {answered} answers");
            assert_eq!(peers.len(), 1, "the connection changed link: {peers:?}");
        }
        Err(e) => println!("the long connection broke: {e}"),
    }
    broke_after
}

#[test]
fn keep_leaves_the_backups_connections_alone() {
    assert_eq!(failback_with(""), None);
}

#[test]
fn kill_breaks_them_at_once() {
    let broke = failback_with("\toption failback 'kill'\n").expect("kill broke nothing");
    println!("FIGURE failback kill: connection on the backup broken {broke:?} after failback");
    assert!(broke < Duration::from_secs(4), "{broke:?}");
}

#[test]
fn drain_breaks_them_after_the_timeout() {
    let options = format!(
        "\toption failback 'drain'\n\toption drain_timeout '{}'\n",
        DRAIN.as_secs()
    );
    let broke = failback_with(&options).expect("drain broke nothing");
    println!("FIGURE failback drain {DRAIN:?}: connection broken {broke:?} after failback");
    assert!(
        broke >= DRAIN - Duration::from_millis(500) && broke < DRAIN + Duration::from_secs(4),
        "{broke:?}"
    );
}
