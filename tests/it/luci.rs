//! luci-app-connmark-lb in a real browser against the real LuCI: the kit's uhttpd, rpcd and LuCI
//! serve `openwrt/applications/luci-app-connmark-lb`, procd runs our init script with the real binary in the
//! router namespace of the usual topology, and headless Chromium (Playwright, `tests/luci/
//! browser.py`) logs in, opens every page, changes a weight, Saves & Applies, watches a link go
//! down and asks the Explain page. This test builds the world and asserts what the browser saw
//! against what the router and the binary say.
//!
//! Longer than ~600 lines on purpose: it holds only the tests of this one area, each a few
//! dozen lines of steps and assertions; everything they share lives in `support/`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use crate::support::addr::{LAN_HOST, SERVICE, link_addr, link_gateway};
use crate::support::checks::{servers, tcp_target};
use crate::support::owrt::{self, Stack, root_init_with};
use crate::support::package::{EPOCH, crate_version, package_binary, repo};
use crate::support::process::run_command;
use crate::support::process::run_ok;
use crate::support::tempdir::TempDir;
use crate::support::topology::Topology;
use crate::support::traffic::{short_connection, spawn_in};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The last lines of the daemon's and the web server's logs in STATE, for a failure report.
fn logs(state: &Path) -> String {
    ["procd-syslog.log", "procd.log", "rpcd.log", "uhttpd.log"]
        .iter()
        .map(|name| {
            let text = fs::read_to_string(state.join("log").join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            format!("=== {name}:\n{}\n", tail.join("\n"))
        })
        .collect()
}

/// Prints the logs of a failed test before its stack is stopped.
struct LogsOnPanic<'a>(&'a Stack);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", logs(&self.0.state()));
        }
    }
}

/// Two tracked links with fixed devices, balanced 1:1 by policy `balanced` for everything but
/// DNS; probes every 0.5 s so a dead link is down within about 2 s.
fn router_config() -> String {
    config_with("", "", "")
}

/// [`router_config`] with `option` of `section` (globals, wan1 or wan2) set to `value` (a
/// `list` for `lan`), replacing the option's usual value.
fn config_with(section: &str, option: &str, value: &str) -> String {
    let mut sections = vec![(
        "globals".to_string(),
        "globals",
        vec![
            ("enabled", "1".to_string()),
            ("backend", "nftables".into()),
            ("lan", "eth0".into()),
        ],
    )];
    for link in 1..=2 {
        sections.push((
            format!("wan{link}"),
            "interface",
            vec![
                ("device", format!("wan{link}")),
                ("gateway", link_gateway(link).to_string()),
                ("source", link_addr(link).to_string()),
                ("weight", "1".into()),
                ("track_ip", SERVICE.to_string()),
                ("interval", "0.5".into()),
                ("down", "2".into()),
                ("up", "2".into()),
            ],
        ));
    }
    // Members without a weight of their own take their interface's, so the weight set on
    // the Interfaces page is the one the policy balances by.
    for link in 1..=2 {
        sections.push((
            format!("wan{link}_m"),
            "member",
            vec![("interface", format!("wan{link}"))],
        ));
    }
    let fixed = [
        (
            "balanced",
            "policy",
            &[
                ("use_member", "wan1_m"),
                ("use_member", "wan2_m"),
                ("last_resort", "unreachable"),
            ][..],
        ),
        (
            "dns_main",
            "rule",
            &[
                ("proto", "udp"),
                ("dest_port", "53"),
                ("use_policy", "default"),
            ],
        ),
        (
            "everything",
            "rule",
            &[("dest_ip", "0.0.0.0/0"), ("use_policy", "balanced")],
        ),
    ];
    for (name, kind, options) in fixed {
        let options = options.iter().map(|&(o, v)| (o, v.to_string())).collect();
        sections.push((name.to_string(), kind, options));
    }
    let mut text = String::new();
    for (name, kind, mut options) in sections {
        if name == section {
            match options.iter_mut().find(|(o, _)| *o == option) {
                Some(existing) => existing.1 = value.to_string(),
                None => options.push((option, value.to_string())),
            }
        }
        text.push_str(&format!("config {kind} '{name}'\n"));
        for (o, v) in options {
            let keyword = if matches!(o, "lan" | "track_ip" | "use_member") {
                "list"
            } else {
                "option"
            };
            text.push_str(&format!("\t{keyword} {o} '{v}'\n"));
        }
        text.push('\n');
    }
    text
}

/// Values typed into the forms, by section: each is accepted or refused by the binary, and
/// the form must agree. Chosen at the edges of every rule the config reader has.
const GLOBALS_CASES: &[(&str, &str)] = &[
    ("mark_mask", "0x3F00"),
    ("mark_mask", "0xff"),
    ("mark_mask", "0x3F01"),
    ("mark_mask", "0x100"),
    ("mark_mask", "768"),
    ("mark_mask", "mask"),
    ("table_base", "255"),
    ("table_base", "256"),
    ("table_base", "2147418112"),
    ("table_base", "2147418113"),
    ("priority_base", "0"),
    ("priority_base", "32253"),
    ("priority_base", "32254"),
    ("lan", "br-lan"),
    ("lan", "a-very-long-devname"),
];
const INTERFACE_CASES: &[(&str, &str)] = &[
    ("weight", "0"),
    ("weight", "1000"),
    ("weight", "1001"),
    ("weight", "0x10"),
    ("weight", "+5"),
    ("weight", "2.5"),
    ("weight", "x"),
    ("metric", "1"),
    ("metric", "-1"),
    ("count", "100"),
    ("count", "101"),
    ("down", "0"),
    ("up", "1000"),
    ("timeout", "0.5"),
    ("timeout", "0"),
    ("interval", "3600"),
    ("interval", "3600.1"),
    ("interval", ".5"),
    ("interval", "1e3"),
    ("failure_interval", "0.000000001"),
    ("recovery_interval", "1.0000000001"),
    ("gateway", "10.0.1.1"),
    ("gateway", "10.0.1.256"),
    ("gateway", "010.0.1.1"),
    ("gateway", "2001:db8::1"),
    ("failure_latency", "60000"),
    ("failure_latency", "60001"),
    ("failure_latency", "0"),
    ("recovery_latency", "1000"),
    ("recovery_latency", "1001"),
    ("failure_loss", "101"),
    ("recovery_loss", "40"),
    ("recovery_loss", "41"),
    ("source", "10.0.1.2"),
    ("source", "host"),
    ("device", "eth0.2"),
    ("device", "a-very-long-devname"),
    ("device", "eth\"0"),
];

/// Typed into the Edit dialog of rule `dns_main` (proto udp, dest_port 53).
const RULE_CASES: &[(&str, &str)] = &[
    ("proto", "tcp"),
    ("proto", "gre"),
    ("proto", "256"),
    ("dest_port", "443"),
    ("dest_port", "8000-8080"),
    ("dest_port", "22,80,443"),
    ("dest_port", "0"),
    ("dest_port", "70000"),
    ("dest_port", "80-70"),
    ("dest_port", "http"),
    ("src_port", "1024:2048"),
    ("src_port", "1024-"),
];

/// Whether `connmark-lb check` accepts `option` = `value` in `section` of the test's config;
/// a refusal must name that option.
fn binary_accepts(dir: &Path, section: &str, option: &str, value: &str) -> bool {
    let text = config_with(section, option, value);
    let file = dir.join("case.uci");
    fs::write(&file, &text).expect("write case");
    let output = run_command(
        Command::new(env!("CARGO_BIN_EXE_connmark-lb"))
            .args(["check", "--uci"])
            .arg(&file),
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => true,
        Some(2) if stderr.contains(&format!("option '{option}'")) => false,
        _ => panic!(
            "check of {option} '{value}' in {section}: {}\n{stderr}\n{text}",
            output.status
        ),
    }
}

/// The lines the browser driver printed, one JSON object per step.
fn steps(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn step<'a>(steps: &'a [Value], name: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("the browser driver reported no step {name:?}: {steps:?}"))
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed().as_secs() < 20,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn luci_pages_in_a_real_browser() {
    let started = Instant::now();
    let topo = Topology::new(2);
    let sbin = topo.dir.path().join("sbin");
    fs::create_dir_all(&sbin).expect("mkdir sbin");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_connmark-lb"), sbin.join("connmark-lb"))
        .expect("symlink binary");
    let owrt = Stack::new("luci");
    let _logs = LogsOnPanic(&owrt);
    owrt.write_config("connmark-lb", &router_config());

    // procd runs init scripts by path: an executable copy of ours.
    let initd = topo.dir.path().join("init.d");
    fs::create_dir_all(&initd).expect("mkdir init.d");
    fs::copy(
        repo().join("files/etc/init.d/connmark-lb"),
        initd.join("connmark-lb"),
    )
    .expect("copy init script");
    fs::set_permissions(initd.join("connmark-lb"), fs::Permissions::from_mode(0o755))
        .expect("chmod init script");
    let path = |p: &Path| p.display().to_string();
    owrt.start_ubus();
    owrt.ok(
        "procd-start",
        &[
            topo.router.name(),
            "--initd",
            &path(&initd),
            "--sbin",
            &path(&sbin),
        ],
    );
    owrt.ok("procd-exec", &["/etc/init.d/connmark-lb", "start"]);
    let ruleset = || {
        topo.router
            .output("nft", &["list", "table", "inet", "connmark_lb"], None)
    };
    wait_for("the daemon's first apply", || ruleset().status.success());
    let app = repo().join("openwrt/applications/luci-app-connmark-lb");
    owrt.ok("luci-start", &[topo.router.name(), "--app", &path(&app)]);
    let url = fs::read_to_string(owrt.state().join("luci/url")).expect("read luci/url");

    let shots = std::env::var_os("LUCI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| topo.dir.path().join("shots"));
    fs::create_dir_all(&shots).expect("mkdir shots");
    let pages: Vec<String> = [
        "status",
        "interfaces",
        "members",
        "policies",
        "rules",
        "globals",
        "explain",
        "check",
    ]
    .iter()
    .map(|p| format!("admin/network/connmark-lb/{p}"))
    .collect();
    let nft = |args: &[&str]| {
        let mut argv = vec!["ip", "netns", "exec", topo.router.name(), "nft"];
        argv.extend(args);
        argv.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let state = owrt.state().display().to_string();
    let kit = |args: &[&str]| {
        let prefix = owrt::prefix();
        let mut argv = vec![
            prefix.join("bin/owrt.sh").display().to_string(),
            "-p".to_string(),
            prefix.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    };
    let in_view = |args: &[&str]| {
        let mut all = vec!["procd-exec", &state];
        all.extend(args);
        kit(&all)
    };
    let ip_netns = |ns: &str, line: &str| {
        let mut argv = vec!["ip", "netns", "exec", ns];
        argv.extend(line.split_whitespace());
        argv.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let spec = json!({
        "url": url.trim(),
        "password": "openwrt-kit",
        "shots": shots,
        "pages": pages,
        "weight": {"section": "wan2", "value": 3},
        "ruleset": nft(&["list", "table", "inet", "connmark_lb"]),
        "validation": {
            "globals": GLOBALS_CASES,
            "interface": INTERFACE_CASES,
            "rule": RULE_CASES,
            "rule_section": "dns_main",
        },
        "check": in_view(&["connmark-lb", "check"]),
        "status": kit(&["ubus", &state, "call", "connmark-lb", "status"]),
        "drop": ip_netns(topo.isp(2).name(), "nft add rule inet isp loss counter name lost drop"),
        "down_link": "wan2",
        "explain": {
            "source": LAN_HOST.to_string(),
            "destination": SERVICE.to_string(),
            "protocol": "tcp",
            "port": tcp_target().port(),
            "argv": in_view(&[
                "connmark-lb",
                "explain",
                "--json",
                &LAN_HOST.to_string(),
                &SERVICE.to_string(),
                "tcp",
                &tcp_target().port().to_string(),
            ]),
        },
    });
    let spec_file = topo.dir.write("browser.json", &spec.to_string());
    // New LAN connections about every 40 ms while the browser works, for the Status page's
    // shares and rates.
    let _servers = servers(&topo);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        spawn_in(&topo.lan, move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = short_connection(None, tcp_target().into());
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    let output = run_command(
        Command::new("python3")
            .arg(repo().join("tests/luci/browser.py"))
            .arg(&spec_file),
        None,
    );
    stop.store(true, Ordering::Relaxed);
    load.join().expect("the LAN load thread");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser driver failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let steps = steps(&stdout);

    for page in steps.iter().filter(|s| s["step"] == "page") {
        assert_eq!(page["errors"], json!([]), "JavaScript errors on {page}");
        assert!(
            !page["title"].as_str().unwrap_or_default().is_empty(),
            "page without a title: {page}"
        );
    }
    assert_eq!(
        steps.iter().filter(|s| s["step"] == "page").count(),
        pages.len()
    );
    let results = &step(&steps, "validation")["results"];
    let mut disagreements = Vec::new();
    for (section, key) in [
        ("globals", "globals"),
        ("wan2", "interface"),
        ("dns_main", "rule"),
    ] {
        for case in results[key].as_array().expect("validation results") {
            let (option, value) = (case[0].as_str().unwrap(), case[1].as_str().unwrap());
            let form = case[2].as_bool().expect("a verdict");
            if form != binary_accepts(topo.dir.path(), section, option, value) {
                disagreements.push(format!(
                    "{section} {option} '{value}': form accepts: {form}"
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "the forms and the binary disagree:\n{}",
        disagreements.join("\n")
    );
    assert_eq!(
        step(&steps, "invalid_weight")["refused"],
        true,
        "weight 1001 was not refused in the form"
    );
    let apply = step(&steps, "apply");
    assert_eq!(apply["applied"], true, "Save & Apply: {apply}");
    // Save & Apply wrote the new weight and nothing else (no defaults spelled out).
    assert_eq!(
        fs::read_to_string(owrt.state().join("etc-config/connmark-lb"))
            .expect("read the config")
            .trim(),
        config_with("wan2", "weight", "3").trim(),
        "/etc/config/connmark-lb after Save & Apply"
    );
    let after = apply["ruleset_after"].as_str().unwrap_or_default();
    assert!(
        after.contains("numgen inc mod 4 vmap { 0 : goto mark_wan1, 1-3 : goto mark_wan2 }"),
        "the running daemon did not load the new weights:\n{after}"
    );
    // The Check page shows what `connmark-lb check` prints.
    let check = step(&steps, "check");
    assert_eq!(check["page"]["valid"], true, "{check}");
    let cli = check["cli"].as_str().expect("connmark-lb check ran");
    assert!(cli.contains("table inet connmark_lb {"), "{cli}");
    assert_eq!(
        check["page"]["output"].as_str().map(str::trim_end),
        Some(cli.trim_end()),
        "the Check page and `connmark-lb check` differ"
    );

    // With weights 1:3, the Status page's shares of the last refresh are about 25% and 75%,
    // and both links carry traffic.
    let figures = &step(&steps, "figures")["links"];
    let link = |name: &str| {
        figures
            .as_array()
            .and_then(|links| links.iter().find(|l| l[0] == name))
            .unwrap_or_else(|| panic!("no row for {name}: {figures}"))
    };
    for (name, share) in [("wan1", 0.25), ("wan2", 0.75)] {
        let row = link(name);
        let shown = row[1].as_f64().unwrap_or_else(|| panic!("no share: {row}"));
        assert!(
            (shown - share).abs() < 0.15,
            "{name}'s share {shown}, expected {share}"
        );
        for rate in [&row[2], &row[3]] {
            assert!(
                rate.as_f64().unwrap_or_default() > 0.0,
                "{name} without traffic: {row}"
            );
        }
    }

    // The Status page shows the dead link down within one refresh (3 s) of the daemon.
    let down = step(&steps, "down");
    let daemon = down["daemon_after"]
        .as_f64()
        .expect("the daemon saw the link down");
    let page = down["page_after"]
        .as_f64()
        .expect("the page showed the link down");
    assert!(
        page <= daemon + 3.0 + 1.0,
        "page showed down {page:.1} s after the drop, daemon {daemon:.1} s: {down}"
    );
    let row = down["row"].as_str().unwrap_or_default();
    assert!(row.contains("down for"), "{row}");

    // The Explain page answers what `connmark-lb explain --json` answers: with wan2 down,
    // rule `everything`, policy `balanced`, link wan1 with its address.
    let explain = step(&steps, "explain");
    let (page, cli) = (&explain["page"], &explain["cli"]);
    assert!(cli.is_object(), "connmark-lb explain failed: {explain}");
    for (shown, key) in [
        ("decision", "decision"),
        ("interface", "interface"),
        ("source-address", "source_address"),
        ("rule", "rule"),
        ("policy", "policy"),
    ] {
        assert_eq!(
            page[shown], cli[key],
            "Explain page {shown} differs: {explain}"
        );
    }
    assert_eq!(cli["interface"], "wan1", "{explain}");
    assert_eq!(cli["source_address"], link_addr(1).to_string(), "{explain}");

    let done = step(&steps, "done");
    assert_eq!(done["errors"], json!([]), "JavaScript errors: {done}");
    eprintln!(
        "luci browser test: {:.1} s in the browser, {:.1} s in total",
        done["seconds"].as_f64().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
}

/// Builds the LuCI app's package (PACKAGE=luci-app-connmark-lb) or connmark-lb's with `script`.
fn build_package(script: &str, luci: bool, out: &Path) -> PathBuf {
    let mut command = Command::new(repo().join("cross").join(script));
    command
        .arg(if luci { "all" } else { "x86_64" })
        .arg(package_binary())
        .arg(out)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("APK", owrt::prefix().join("bin/apk"));
    if luci {
        command.env("PACKAGE", "luci-app-connmark-lb");
    }
    PathBuf::from(run_ok(&mut command).trim())
}

/// What the app puts on a router: every file of the source tree's htdocs/ under /www and of
/// root/ under /, unchanged, readable by uhttpd and rpcd.
fn app_files() -> Vec<(PathBuf, PathBuf)> {
    fn walk(dir: &Path, installed: &Path, out: &mut Vec<(PathBuf, PathBuf)>) {
        for entry in fs::read_dir(dir).expect("read the app tree") {
            let path = entry.expect("dir entry").path();
            let target = installed.join(path.file_name().expect("a name"));
            if path.is_dir() {
                walk(&path, &target, out);
            } else {
                out.push((path, target));
            }
        }
    }
    let app = repo().join("openwrt/applications/luci-app-connmark-lb");
    let mut files = Vec::new();
    walk(&app.join("htdocs"), Path::new("www"), &mut files);
    walk(&app.join("root"), Path::new(""), &mut files);
    files
}

fn assert_app_installed(root: &Path, installed: bool) {
    for (source, target) in app_files() {
        let path = root.join(&target);
        if !installed {
            assert!(!path.exists(), "{} left after removal", target.display());
            continue;
        }
        let meta = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{} not installed: {e}", target.display()));
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o644,
            "{}",
            target.display()
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            fs::read(&source).unwrap(),
            "{}",
            target.display()
        );
    }
}

/// The feed Makefile follows Cargo.toml's version and says what the packages say.
#[test]
fn luci_feed_makefile_matches_the_packages() {
    let text =
        fs::read_to_string(repo().join("openwrt/applications/luci-app-connmark-lb/Makefile"))
            .unwrap();
    for line in [
        format!("PKG_VERSION:={}", crate_version()),
        "LUCI_DEPENDS:=+connmark-lb +luci-base".to_string(),
        "LUCI_PKGARCH:=all".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "Makefile lacks {line:?}");
    }
}

/// opkg installs the app from a feed, pulling connmark-lb in, and removes it; apk adds and
/// deletes the .apk. luci-base is a stand-in; everything else is ours and the kit's.
#[test]
fn luci_package_installs_and_removes_with_opkg_and_apk() {
    let tmp = TempDir::new("luci-pkg");
    let feed = tmp.join("feed");
    let luci_ipk = build_package("mkipk.sh", true, &feed);
    build_package("mkipk.sh", false, &feed);
    assert_eq!(
        luci_ipk.file_name().and_then(|n| n.to_str()),
        Some(format!("luci-app-connmark-lb_{}-r1_all.ipk", crate_version()).as_str())
    );
    owrt::owrt_ok(&[Path::new("feed-index"), &feed]);
    let root = tmp.join("opkg-root");
    root_init_with(&root, &[&feed], &["luci-base"]);
    let opkg = |args: &[&str]| run_ok(owrt::owrt(&[Path::new("opkg"), &root]).args(args));
    opkg(&["update"]);
    opkg(&["install", "luci-app-connmark-lb"]);
    assert_app_installed(&root, true);
    assert!(
        root.join("usr/sbin/connmark-lb").exists(),
        "connmark-lb was not pulled in"
    );
    opkg(&["remove", "luci-app-connmark-lb"]);
    assert_app_installed(&root, false);

    let out = tmp.join("apk");
    let luci_apk = build_package("mkapk.sh", true, &out);
    let lb_apk = build_package("mkapk.sh", false, &out);
    let root = tmp.join("apk-root");
    root_init_with(&root, &[], &["luci-base"]);
    let apk = |args: &[&OsStr]| run_ok(owrt::owrt(&[Path::new("apk"), &root]).args(args));
    apk(&[
        OsStr::new("add"),
        OsStr::new("--allow-untrusted"),
        lb_apk.as_os_str(),
        luci_apk.as_os_str(),
    ]);
    assert_app_installed(&root, true);
    let db = fs::read_to_string(root.join("lib/apk/db/installed")).unwrap();
    let entry = db
        .split("\n\n")
        .find(|e| e.contains("P:luci-app-connmark-lb\n"))
        .expect("the app in apk's database");
    for field in ["A:noarch", "D:connmark-lb luci-base"] {
        assert!(
            entry.lines().any(|l| l == field),
            "{field} missing:\n{entry}"
        );
    }
    apk(&[OsStr::new("del"), OsStr::new("luci-app-connmark-lb")]);
    assert_app_installed(&root, false);
}
