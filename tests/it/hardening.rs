//! Hostile conditions, each found by trying to break the binary: applies and stops racing each
//! other, other software's routes, rules and chains beside ours, state that no longer matches
//! the kernel, an unusable or booby-trapped state directory, a daemon that died without
//! cleaning up, iptables-nft leftovers.
//!
//! Longer than ~600 lines on purpose: it holds only the tests of this one area, each a few
//! dozen lines of steps and assertions; everything they share lives in `support/`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::addr::link_addr;
use crate::support::checks::tcp_target;
use crate::support::daemon::Daemon;
use crate::support::lbconfig::{Backend, Balance, LbConfig};
use crate::support::topology::{RouterState, Topology};
use crate::support::traffic::{Server, tcp_connections};

const LB: &str = env!("CARGO_BIN_EXE_connmark-lb");

fn config(backend: Backend, weights: &[u32]) -> LbConfig {
    LbConfig::new(backend, Balance::RoundRobin, weights)
}

/// `connmark-lb args --state-dir state_dir` in the router, through `sh -c` so a test can
/// prepend shell (umask, mounts).
fn lb_sh(topo: &Topology, shell: &str, args: &[&str], state_dir: &Path) -> Output {
    let mut command = topo.router.command("sh");
    command
        .arg("-c")
        .arg(format!("{shell} exec \"$0\" \"$@\""))
        .arg(LB)
        .args(args)
        .arg("--state-dir")
        .arg(state_dir);
    crate::support::process::run_command(&mut command, None)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts `output` exited with `code` and its stderr says `needle`.
fn assert_failed(output: &Output, code: i32, needle: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{text}");
    assert!(text.contains(needle), "expected {needle:?} in: {text}");
}

/// Panics with the differences when the router no longer matches `before`.
fn assert_unchanged(topo: &Topology, before: &RouterState, what: &str) {
    if let Some(diff) = before.differences(&topo.router_state()) {
        panic!("{what} changed the router:\n{diff}");
    }
}

/// Waits for `child` at most `limit`; kills it and fails naming `what` when it takes longer.
fn wait_within(child: &mut std::process::Child, limit: Duration, what: &str) {
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The router's state with every part's lines sorted: equal whatever order the objects were
/// created in.
fn sorted_state(topo: &Topology) -> RouterState {
    let sort = |text: String| {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    };
    let s = topo.router_state();
    RouterState {
        nft: sort(s.nft),
        iptables: sort(s.iptables),
        rules: sort(s.rules),
        routes: sort(s.routes),
        ip6tables: sort(s.ip6tables),
        rules6: sort(s.rules6),
        routes6: sort(s.routes6),
    }
}

fn assert_state(topo: &Topology, expected: &RouterState, what: &str) {
    if let Some(diff) = expected.differences(&sorted_state(topo)) {
        panic!("{what}:\n{diff}");
    }
}

/// Starts `connmark-lb args` in the router without waiting.
fn spawn_lb(topo: &Topology, args: &[&str]) -> std::process::Child {
    topo.lb_command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start connmark-lb")
}

/// Three applies at once, many rounds, alternating 2 and 3 links, every third round from a
/// clean router (where the loser's rollback used to delete the winner's table), plus rounds
/// where an apply races a stop: every process exits 0 and the router ends exactly as after
/// one apply (or one stop), with a record that matches.
#[test]
fn concurrent_applies_and_stops_are_serialised() {
    let topo = Topology::new(3);
    let pristine = sorted_state(&topo);
    let configs = [
        topo.write_config("two", &config(Backend::Nftables, &[1, 1])),
        topo.write_config("three", &config(Backend::Nftables, &[1, 1, 2])),
    ];
    let mut expected = Vec::new();
    for c in &configs {
        topo.apply(c);
        expected.push(sorted_state(&topo));
        topo.stop();
    }
    let finish = |children: Vec<std::process::Child>, what: &str| {
        for child in children {
            let output = child.wait_with_output().expect("wait for connmark-lb");
            assert!(output.status.success(), "{what}: {}", stderr(&output));
        }
    };
    for round in 0..24 {
        let (c, state) = (&configs[round % 2], &expected[round % 2]);
        if round % 3 == 0 {
            topo.stop();
        }
        let args = ["apply", c.flag(), c.path_str()];
        let children = (0..3).map(|_| spawn_lb(&topo, &args)).collect();
        finish(children, &format!("round {round}: parallel apply"));
        assert_state(
            &topo,
            state,
            &format!("round {round}: after 3 parallel applies"),
        );
        assert!(topo.state_dir().join("applied.json").exists());
    }
    for round in 0..8 {
        let c = &configs[round % 2];
        let children = vec![
            spawn_lb(&topo, &["apply", c.flag(), c.path_str()]),
            spawn_lb(&topo, &["stop"]),
        ];
        finish(children, &format!("apply racing stop, round {round}"));
        let recorded = topo.state_dir().join("applied.json").exists();
        let want = if recorded {
            &expected[round % 2]
        } else {
            &pristine
        };
        assert_state(&topo, want, &format!("apply racing stop, round {round}"));
    }
}

/// The daemon's reloads take the same lock: SIGHUPs while applies of the same config run leave
/// no failed reload in its log and the router exactly as after one apply.
#[test]
fn daemon_reloads_and_applies_are_serialised() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::os::fd::AsRawFd;
    let topo = Topology::new(2);
    let c = topo.write_config("two", &config(Backend::Nftables, &[1, 1]));
    topo.apply(&c);
    let expected = sorted_state(&topo);
    topo.stop();
    let run = topo.lb_command(&["run", c.flag(), c.path_str()]);
    let daemon = Daemon::start(&topo, run, topo.dir.path().join("daemon.err"));
    let pid = Pid::from_raw(daemon.child_pid() as i32);
    for round in 0..30 {
        kill(pid, Signal::SIGHUP).expect("SIGHUP");
        let args = ["apply", c.flag(), c.path_str()];
        let children: Vec<_> = (0..2).map(|_| spawn_lb(&topo, &args)).collect();
        kill(pid, Signal::SIGHUP).expect("SIGHUP");
        for child in children {
            let output = child.wait_with_output().expect("wait for apply");
            assert!(
                output.status.success(),
                "round {round}: {}",
                stderr(&output)
            );
        }
        // Under the lock no change is halfway.
        let lock = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(topo.state_dir().join("lock"))
            .expect("lock file");
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        assert_state(
            &topo,
            &expected,
            &format!("round {round}: reloads beside applies"),
        );
        drop(lock);
    }
    assert!(
        daemon.child().try_wait().expect("wait").is_none(),
        "the daemon exited"
    );
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    wait_within(
        &mut daemon.child(),
        Duration::from_secs(10),
        "the daemon did not stop",
    );
    let text = daemon.log();
    assert!(!text.contains("reload failed"), "{text}");
    assert!(!text.contains("updating the rules failed"), "{text}");
}

/// A route in table 4200 and in 4003 (a table number we would use for a third link), a
/// non-default route in our own table 4001 and rules shaped like ours at our priorities belong
/// to someone else: apply, re-apply, moving our bases and stop leave them alone.
#[test]
fn foreign_routes_and_rules_survive_apply_and_stop() {
    let topo = Topology::new(2);
    topo.router.ip_batch(
        "route add 10.99.0.0/16 via 10.0.1.1 dev wan1 table 4200\n\
         route add default via 10.0.2.1 dev wan2 table 4003\n\
         route add 10.98.0.0/16 via 10.0.2.1 dev wan2 table 4001\n\
         rule add priority 4101 fwmark 0x3200/0x3f00 lookup 4200\n\
         rule add priority 4003 fwmark 0x1/0xff lookup 4003\n\
         rule add priority 4007 fwmark 0x300/0x3f00 unreachable\n",
    );
    let foreign = |what: &str| {
        let rules = topo.router.run("ip rule show");
        for rule in [
            "4101:\tfrom all fwmark 0x3200/0x3f00 lookup 4200",
            "4003:\tfrom all fwmark 0x1/0xff lookup 4003",
            "4007:\tfrom all fwmark 0x300/0x3f00 unreachable",
        ] {
            assert!(rules.contains(rule), "{what}: lost `{rule}`:\n{rules}");
        }
        let routes = topo.router.run("ip route show table all");
        for route in [
            "10.99.0.0/16 via 10.0.1.1 dev wan1 table 4200",
            "default via 10.0.2.1 dev wan2 table 4003",
            "10.98.0.0/16 via 10.0.2.1 dev wan2 table 4001",
        ] {
            assert!(routes.contains(route), "{what}: lost `{route}`:\n{routes}");
        }
    };
    let base = config(Backend::Nftables, &[1, 1]);
    let two = topo.write_config("two", &base);
    topo.apply(&two);
    foreign("apply");
    topo.apply(&two);
    foreign("re-apply");
    let moved = topo.write_config(
        "moved",
        &base
            .clone()
            .with_option("globals", "table_base", "5000")
            .with_option("globals", "priority_base", "5000"),
    );
    topo.apply(&moved);
    foreign("apply with other bases");
    let rules = topo.router.run("ip rule show");
    assert_eq!(rules.matches("suppress_prefixlength").count(), 1, "{rules}");
    assert!(
        rules.contains("5000:\tfrom all lookup main suppress_prefixlength 0"),
        "{rules}"
    );
    assert!(
        !rules.contains("lookup 4001") && rules.contains("lookup 5001"),
        "{rules}"
    );
    topo.apply(&two);
    topo.stop();
    foreign("stop");
    let rules = topo.router.run("ip rule show");
    assert!(
        !rules.contains("suppress_prefixlength"),
        "ours left:\n{rules}"
    );
    assert!(!rules.contains("lookup 4001"), "ours left:\n{rules}");
    let routes = topo.router.run("ip route show table 4001");
    assert!(!routes.contains("default"), "our route left:\n{routes}");
}

/// Someone flushes the whole ruleset or deletes our table between applies: the next apply
/// (with fewer links, so the record names chains that no longer exist) and stop still work.
#[test]
fn apply_and_stop_succeed_whatever_the_kernel_lost() {
    let topo = Topology::new(3);
    let _server = Server::tcp(&topo.srv, tcp_target());
    let three = topo.write_config("three", &config(Backend::Nftables, &[1, 1, 1]));
    let two = topo.write_config("two", &config(Backend::Nftables, &[1, 1]));
    topo.apply(&three);
    topo.router.run("nft flush ruleset");
    topo.apply(&two);
    let tally = tcp_connections(&topo.lan, tcp_target(), 40);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    assert_eq!(tally.count(link_addr(1)), 20, "{tally:?}");
    assert_eq!(tally.count(link_addr(2)), 20, "{tally:?}");
    topo.apply(&three);
    topo.router.run("nft delete table inet connmark_lb");
    topo.apply(&two);
    topo.apply(&two);
    topo.router.run("nft flush ruleset");
    topo.stop();
    let state = topo.router_state();
    assert!(!state.rules.contains("0x3f00"), "{}", state.rules);
    topo.apply(&three);
}

/// A state directory that is a file, or on a read-only mount: apply fails before it changes
/// anything (it used to load the rules and then fail to record them).
#[test]
fn unwritable_state_dir_changes_nothing() {
    let topo = Topology::new(2);
    let c = topo.write_config("lb", &config(Backend::Nftables, &[1, 1]));
    let pristine = topo.router_state();
    let file = topo.dir.write("not-a-dir", "");
    let output = lb_sh(&topo, "", &["apply", c.flag(), c.path_str()], &file);
    assert_failed(&output, 1, "not-a-dir");
    assert_unchanged(&topo, &pristine, "apply with a file as state dir");
    let ro = topo.dir.path().join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    let ro_str = ro.to_str().expect("utf-8");
    let mount =
        format!("mount --bind {ro_str} {ro_str} && mount -o remount,bind,ro {ro_str} {ro_str} &&");
    let mut command = topo.router.command("unshare");
    command
        .args(["-m", "sh", "-c"])
        .arg(format!("{mount} exec \"$0\" \"$@\""))
        .arg(LB)
        .args(["apply", c.flag(), c.path_str(), "--state-dir", ro_str]);
    let output = crate::support::process::run_command(&mut command, None);
    assert_failed(&output, 1, "Read-only");
    assert_unchanged(&topo, &pristine, "apply with a read-only state dir");
}

/// With umask 000 the state dir and files are still private; a symlink planted where a temp
/// file used to be written is not followed; a state dir others can write or that another user
/// owns is refused before anything changes.
#[test]
fn state_files_are_private_and_never_followed() {
    let topo = Topology::new(2);
    let c = topo.write_config("lb", &config(Backend::Nftables, &[1, 1]));
    let args = ["apply", c.flag(), c.path_str()];
    let fresh = topo.dir.path().join("fresh").join("state");
    let output = lb_sh(&topo, "umask 000;", &args, &fresh);
    assert!(output.status.success(), "{}", stderr(&output));
    let mode = |p: &Path| std::fs::symlink_metadata(p).expect("stat").mode() & 0o777;
    assert_eq!(mode(&fresh), 0o700);
    for entry in std::fs::read_dir(&fresh).expect("read state dir") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    let victim = topo.dir.write("victim", "precious\n");
    for name in ["applied.tmp", "status.tmp", "lock.tmp"] {
        std::os::unix::fs::symlink(&victim, fresh.join(name)).expect("plant symlink");
    }
    let output = lb_sh(&topo, "umask 000;", &args, &fresh);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );

    topo.stop();
    let pristine = topo.router_state();
    let loose = topo.dir.path().join("loose");
    std::fs::create_dir(&loose).expect("mkdir");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let output = lb_sh(&topo, "", &args, &loose);
    assert_failed(&output, 1, "writable by others");
    let foreign = topo.dir.path().join("foreign");
    std::fs::create_dir(&foreign).expect("mkdir");
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown");
    let output = lb_sh(&topo, "", &args, &foreign);
    assert_failed(&output, 1, "owned by uid 65534");
    assert_unchanged(&topo, &pristine, "a refused state dir");
}

/// `status` exits 0 only while the recorded daemon lives: after kill -9 (status.json left
/// behind), or when the pid now belongs to another program, it exits 1.
#[test]
fn status_of_a_dead_daemon_exits_1() {
    let topo = Topology::new(2);
    let c = topo.write_config("lb", &config(Backend::Nftables, &[1, 1]));
    let run = topo.lb_command(&["run", c.flag(), c.path_str()]);
    let daemon = Daemon::start(&topo, run, topo.dir.path().join("daemon.err"));
    let status_file = topo.state_dir().join("status.json");
    let output = topo.lb(&["status"]);
    assert!(output.status.success(), "{}", stderr(&output));
    daemon.child().kill().expect("kill -9 the daemon");
    daemon.child().wait().expect("reap the daemon");
    assert!(status_file.exists(), "kill -9 leaves status.json behind");
    let output = topo.lb(&["status"]);
    assert_failed(&output, 1, "not running");

    let text = std::fs::read_to_string(&status_file).expect("status.json");
    let value: serde_json::Value = serde_json::from_str(&text).expect("json");
    let other = text.replace(
        &format!("\"pid\": {}", value["pid"]),
        &format!("\"pid\": {}", std::process::id()),
    );
    std::fs::write(&status_file, other).expect("rewrite status.json");
    let output = topo.lb(&["status"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
}

/// iptables backend on iptables-nft: stop removes the `ip mangle`/`ip nat` tables it leaves
/// empty (each base chain is a hook every packet crosses), keeps a table that holds someone
/// else's rule, and never deletes a chain merely because its name starts with CMLB_.
#[test]
fn iptables_stop_leaves_no_empty_tables_and_keeps_foreign_cmlb_chains() {
    let topo = Topology::new(2);
    let pristine = topo.router.run("nft list ruleset");
    let c = topo.write_config("lb", &config(Backend::Iptables, &[1, 1]));
    topo.apply(&c);
    topo.stop();
    let after = topo.router.run("nft list ruleset");
    assert_eq!(after, pristine, "stop left iptables-nft tables behind");

    topo.router.run("iptables -t mangle -N CMLB_FOREIGN");
    topo.router
        .run("iptables -t mangle -A CMLB_FOREIGN -j RETURN");
    topo.router
        .run("iptables -t mangle -A FORWARD -j CMLB_FOREIGN");
    let foreign = "-A FORWARD -j CMLB_FOREIGN";
    topo.apply(&c);
    topo.apply(&c);
    let saved = topo.router.run("iptables-save");
    assert!(
        saved.contains(foreign),
        "apply deleted a foreign chain:\n{saved}"
    );
    topo.stop();
    let saved = topo.router.run("iptables-save");
    assert!(
        saved.contains(foreign),
        "stop deleted a foreign chain:\n{saved}"
    );
    assert!(saved.contains("-A CMLB_FOREIGN -j RETURN"), "{saved}");
    let after = topo.router.run("nft list ruleset");
    assert!(!after.contains("table ip nat"), "{after}");
    assert!(after.contains("table ip mangle"), "{after}");
}

/// A config file that is missing, unreadable as text, too big or binary, and a bad command
/// line, exit 2; long values are cut and control characters escaped in the message.
#[test]
fn bad_input_exits_2_with_a_bounded_printable_message() {
    let dir = std::env::temp_dir().join(format!("cmlb-it-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let run = |args: &[&str]| {
        let started = Instant::now();
        let output = crate::support::process::run_command(Command::new(LB).args(args), None);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} took too long"
        );
        output
    };
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        path.to_str().expect("utf-8").to_string()
    };
    let binary = write(
        "binary.uci",
        b"config interface 'wan'\n\toption device '\xff\xfe'\n",
    );
    let big = write("big.uci", &vec![b'#'; (1 << 20) + 1]);
    let missing = dir.join("missing.uci").to_str().expect("utf-8").to_string();
    let a_dir = dir.to_str().expect("utf-8").to_string();
    for args in [
        vec!["check", "--uci", &missing],
        vec!["apply", "--config", &missing],
        vec!["check", "--uci", &a_dir],
        vec!["check", "--uci", &binary],
        vec!["check", "--uci", &big],
        vec!["check", "--uci", "/dev/zero"],
        vec!["check", "--config", "/dev/zero"],
        vec!["frobnicate"],
        vec!["check", "--no-such-flag"],
        vec![],
    ] {
        let output = run(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!output.stderr.is_empty(), "{args:?}: no message");
    }
    assert!(run(&["--help"]).status.success());
    let long = "x".repeat(100_000);
    let hostile = write(
        "hostile.uci",
        format!(
            "config interface 'wan'\n\toption device 'eth1'\n\toption weight '{long}'\n\
             config interface 'wanb'\n\toption device 'eth2'\n\toption gateway 'a\0b\x1b[2J'\n"
        )
        .as_bytes(),
    );
    let output = run(&["check", "--uci", &hostile]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.len() < 2000,
        "message not cut: {} bytes",
        message.len()
    );
    assert!(message.contains("more bytes"), "{message}");
    assert!(
        !message.contains('\u{1b}') && !message.contains('\0'),
        "{message:?}"
    );
    assert!(
        message.contains("\\u{1b}") && message.contains("a\\0b"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// A tool that hangs (a fake `nft` first on PATH, hanging while a trigger file exists): apply
/// kills it after 10 s, exits 1 and leaves the router as it was; the daemon, stuck in a reload
/// with it, gets through and still obeys SIGTERM.
#[test]
fn a_hung_tool_is_killed_and_reported() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let topo = Topology::new(2);
    let c = topo.write_config("lb", &config(Backend::Nftables, &[1, 1]));
    let real = crate::support::process::run_command(
        Command::new("sh").args(["-c", "command -v nft"]),
        None,
    );
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    assert!(real.starts_with('/'), "nft not found: {real:?}");
    let bin = topo.dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let trigger = topo.dir.path().join("hang");
    let fake = bin.join("nft");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n[ -e {} ] && exec sleep 1000\nexec {real} \"$@\"\n",
            trigger.display()
        ),
    )
    .expect("write fake nft");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let lb = |args: &[&str]| {
        let mut command = topo.lb_command(args);
        command.env("PATH", &path);
        command
    };

    std::fs::write(&trigger, "").expect("trigger");
    let pristine = topo.router_state();
    let started = Instant::now();
    let mut apply = lb(&["apply", c.flag(), c.path_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start apply");
    wait_within(
        &mut apply,
        Duration::from_secs(30),
        "apply hangs with the hung nft",
    );
    let took = started.elapsed();
    let output = apply.wait_with_output().expect("apply output");
    assert_failed(&output, 1, "nft -f -: no result within 10s: killed");
    assert!(took < Duration::from_secs(20), "apply took {took:?}");
    assert_unchanged(&topo, &pristine, "a killed apply");

    std::fs::remove_file(&trigger).expect("untrigger");
    let daemon = Daemon::start(
        &topo,
        lb(&["run", c.flag(), c.path_str()]),
        topo.dir.path().join("daemon.err"),
    );
    std::fs::write(&trigger, "").expect("trigger");
    let pid = Pid::from_raw(daemon.child_pid() as i32);
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    std::thread::sleep(Duration::from_secs(1));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    wait_within(
        &mut daemon.child(),
        Duration::from_secs(19),
        "the daemon hangs with the hung nft",
    );
    let exit = daemon.child().wait().expect("reap the daemon");
    let text = daemon.log();
    assert!(exit.success(), "{exit}: {text}");
    assert!(text.contains("no result within 10s: killed"), "{text}");
}
