//! One network namespace ([`Netns`]) and the guard that deletes a test's namespaces again.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use super::process::{expect_success, run_command};

/// One network namespace, addressed by its name under /run/netns.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// The name under /run/netns, which threads open to enter it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `program args` inside the namespace and returns its output whatever the status.
    pub fn output(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        run_command(self.command(program).args(args), stdin)
    }

    /// Runs a whitespace-separated command line that must succeed; returns its stdout.
    pub fn run(&self, line: &str) -> String {
        self.run_with_stdin(line, None)
    }

    /// Like [`Netns::run`], feeding `stdin` to the command.
    pub fn run_with_stdin(&self, line: &str, stdin: Option<&str>) -> String {
        let mut words = line.split_whitespace();
        let program = words.next().expect("empty command line");
        let args: Vec<&str> = words.collect();
        let output = self.output(program, &args, stdin);
        expect_success(&format!("`{line}` in {}", self.name), output)
    }

    /// Loads an nft script in one transaction.
    pub fn nft(&self, script: &str) {
        self.run_with_stdin("nft -f -", Some(script));
    }

    /// Runs several `ip` commands in one process.
    pub fn ip_batch(&self, script: &str) {
        self.run_with_stdin("ip -batch -", Some(script));
    }

    /// Sets sysctls given as `key=value` words.
    pub fn sysctl(&self, settings: &str) {
        self.run(&format!("sysctl -q -w {settings}"));
    }

    /// The packet counts of every named counter in nft table `family table`.
    pub fn nft_counters(&self, family: &str, table: &str) -> BTreeMap<String, u64> {
        let listing = self.run(&format!("nft list counters table {family} {table}"));
        parse_counters(&listing)
    }
}

/// Reads `counter NAME { packets N bytes M }` blocks of an nft listing.
fn parse_counters(listing: &str) -> BTreeMap<String, u64> {
    let mut counters = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in listing.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("counter ") {
            current = rest.split_whitespace().next().map(str::to_string);
        } else if let Some(rest) = line.strip_prefix("packets ") {
            let name = current
                .take()
                .expect("packets line outside a counter block");
            let packets = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad counter line {line:?}"));
            counters.insert(name, packets);
        }
    }
    counters
}

/// Deletes every namespace it was given when dropped, also while unwinding from a panic.
#[derive(Default)]
pub struct NamespaceGuard {
    names: Vec<String>,
}

impl NamespaceGuard {
    pub fn create(&mut self, name: String) -> Netns {
        let output = run_command(Command::new("ip").args(["netns", "add", &name]), None);
        expect_success(&format!("ip netns add {name}"), output);
        self.names.push(name.clone());
        Netns { name }
    }
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let output = run_command(Command::new("ip").args(["netns", "del", name]), None);
            if !output.status.success() {
                eprintln!(
                    "cleanup: ip netns del {name}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_counters;

    #[test]
    fn counters_are_read_from_an_nft_listing() {
        let listing = "table inet isp {\n\tcounter forwarded {\n\t\tpackets 12 bytes 960\n\t}\n\
                       \tcounter spoofed {\n\t\tpackets 0 bytes 0\n\t}\n}\n";
        let counters = parse_counters(listing);
        assert_eq!(counters.get("forwarded"), Some(&12));
        assert_eq!(counters.get("spoofed"), Some(&0));
        assert_eq!(counters.len(), 2);
    }
}
