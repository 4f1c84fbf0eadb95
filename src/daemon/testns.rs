//! Throwaway network namespaces for tests that need real sockets and routing.
//!
//! Names carry the pid and a counter so tests run in parallel; the namespace (and every veth
//! end inside it) is deleted when the guard drops, also when a test panics.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace that exists as long as this value.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `cmlb-<tag>-<pid>-<n>` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("cmlb-{tag}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name], None);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full, None)
    }

    /// Runs a command inside the namespace and returns its stdout.
    pub fn exec(&self, command: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(command);
        run("ip", &full, None)
    }

    /// Loads an nft script inside the namespace.
    pub fn nft(&self, script: &str) {
        run(
            "ip",
            &["netns", "exec", &self.name, "nft", "-f", "-"],
            Some(script),
        );
    }

    /// Packets seen by the named nft counter `name` of `table inet <table>`.
    pub fn nft_counter(&self, table: &str, name: &str) -> u64 {
        let out = run(
            "ip",
            &[
                "netns", "exec", &self.name, "nft", "-j", "list", "counter", "inet", table, name,
            ],
            None,
        );
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|item| item["counter"]["packets"].as_u64())
            .unwrap()
    }

    /// Runs `f` on a fresh thread that has entered the namespace, so sockets `f` creates
    /// belong to it (and keep belonging to it when used from other threads).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(&path).unwrap();
                    // SAFETY: a valid namespace fd; setns only affects this thread.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Connects `a`'s device `a_dev` to `b`'s device `b_dev` and brings both up.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    run(
        "ip",
        &[
            "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
            &b.name,
        ],
        None,
    );
    a.ip(&["link", "set", a_dev, "up"]);
    b.ip(&["link", "set", b_dev, "up"]);
}

/// Runs a tool through the applier's spawner, panicking with its stderr when it fails;
/// returns its stdout.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    crate::apply::exec::run(program, args, stdin.unwrap_or(""))
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}
