//! The config read over the real ubusd + rpcd (`uci get`, what the router's daemon reads)
//! renders exactly what the same file read with `--uci` renders: the two parsers of UCI
//! (libuci behind rpcd, ours for files) must agree on quoting, escapes, unicode, lists and the
//! names of anonymous sections, or `check --uci` would show something other than the router
//! loads.

use crate::support::owrt::Stack;
use crate::support::package::binary;
use crate::support::process::run;
use std::path::Path;
use std::process::{Command, Output};

/// Anonymous sections referenced by their libuci names (`cfg` + section count + hash of the
/// type), an anonymous policy taken implicitly, lists, both quoting styles and a comment.
const VALID: &str = r#"
config globals 'globals'
	option enabled '1'
	list lan 'eth0'
	list lan "br-lan"
	option colour "grün \"x\""

config interface 'wan'
	option device 'eth1'
	option gateway "192.0.2.1"
	list track_ip '198.51.100.7'
	list track_ip 198.51.100.8

config interface wanb # the second link
	option device 'eth2'
	option gateway '203.0.113.1'
	option weight '3'

config member
	option interface 'wan'
	option weight '2'

config member
	option interface 'wanb'

config policy
	list use_member 'cfg046fdd'
	list use_member cfg056fdd
	option last_resort 'blackhole'
"#;

/// Values with double quotes, backslashes, single quotes, unicode and a line break, in
/// options whose errors quote them, plus unknown options (warnings): the messages must match
/// byte for byte.
const INVALID: &str = r#"
config globals 'globals'
	option balance "round\"robin\\ ünïcødé 'x'"
	option mark_mask 'ff
00'
	option colour 'blue'

config interface 'wan'
	option device 'eth1'
	option weight "3\\\"4"
	option metric '½'

config interface
	option device 'eth2'
	option weight 'zwölf'
	list track_ip 'not an address'
	list track_ip ''

config rule
	option use_policy 'nowhere'
	option dest_port '80'
"#;

fn check(args: &[&str], socket: &Path) -> Output {
    run(Command::new(binary())
        .arg("check")
        .args(args)
        .arg("--ubus-socket")
        .arg(socket))
}

#[test]
fn config_over_rpcd_renders_exactly_what_the_file_renders() {
    let stack = Stack::new("rpcd");
    let socket = stack.start_ubus();
    let file = stack.path("connmark-lb.uci");
    for (case, text) in [("valid", VALID), ("invalid", INVALID)] {
        stack.write_config("connmark-lb", text);
        std::fs::write(&file, text).unwrap();
        let from_file = check(&["--uci", file.to_str().unwrap()], &socket);
        let over_ubus = check(&[], &socket);
        let show = |o: &Output| {
            format!(
                "exit {:?}\nstdout:\n{}stderr:\n{}",
                o.status.code(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        assert_eq!(
            show(&over_ubus),
            show(&from_file),
            "{case}: over rpcd (left) and from the file (right) differ"
        );
        let (stdout, stderr) = (
            String::from_utf8_lossy(&from_file.stdout),
            String::from_utf8_lossy(&from_file.stderr),
        );
        match case {
            "valid" => {
                assert!(from_file.status.success(), "{}", show(&from_file));
                let reply = stack.call("uci", "get", r#"{"config":"connmark-lb"}"#);
                assert_eq!(reply["values"]["cfg066ff5"][".type"], "policy", "{reply}");
                // The anonymous policy's chain carries its libuci name, and its members
                // (weights 2 and 3, by their libuci names) share it 2:3.
                assert!(stdout.contains("chain policy_cfg066ff5 {"), "{stdout}");
                assert!(stdout.contains("mod 5 vmap"), "{stdout}");
                assert!(stdout.contains("\"eth0\", \"br-lan\""), "{stdout}");
            }
            _ => {
                assert_eq!(from_file.status.code(), Some(2), "{}", show(&from_file));
                for needle in ["\"zwölf\"", "\"3\\\"4\"", "\"ff\n00\""] {
                    assert!(stderr.contains(needle), "{needle} not in {stderr}");
                }
            }
        }
    }
}
