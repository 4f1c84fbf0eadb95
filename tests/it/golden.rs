//! Golden tests: each folder under tests/golden holds a config, the exact output expected from
//! `check` for each backend, and a line saying why the case exists. Every golden ruleset is
//! also loaded by the real tool in check mode inside a throwaway network namespace.
//! `UPDATE_GOLDEN=1 cargo test golden` rewrites the expected files after a deliberate change.

use connmark_lb::apply::Backend;
use connmark_lb::config::raw::RawConfig;
use connmark_lb::config::uci_text;
use connmark_lb::config::{Config, Family};
use connmark_lb::context::{check_text, link_states};
use connmark_lb::live::IptablesState;
use connmark_lb::plan::Plan;
use connmark_lb::render::{iptables, nft};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("why").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases in {}", dir.display());
    cases
}

fn config_file(case: &Path) -> PathBuf {
    ["config.uci", "config.json"]
        .iter()
        .map(|name| case.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{}: no config.uci or config.json", case.display()))
}

fn load(case: &Path) -> Config {
    let path = config_file(case);
    let text = std::fs::read_to_string(&path).unwrap();
    let raw = if path.extension().is_some_and(|e| e == "json") {
        RawConfig::from_json_text(&text).unwrap()
    } else {
        uci_text::parse(&text).unwrap()
    };
    Config::from_raw(&raw).unwrap()
}

fn compare(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "{} differs\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

/// Runs `program args` in a fresh network namespace (`unshare -n`) with `input` on stdin.
fn in_fresh_netns(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new("unshare")
        .arg("-n")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("unshare {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The built binary. Under qemu-user (`make test-emulated`) it is built for the emulated
/// machine too, which the host kernel cannot start, so it runs under the emulator named by
/// `CONNMARK_LB_EMULATOR`.
fn connmark_lb() -> Command {
    let binary = env!("CARGO_BIN_EXE_connmark-lb");
    match std::env::var_os("CONNMARK_LB_EMULATOR") {
        Some(emulator) => {
            let mut command = Command::new(emulator);
            command.arg(binary);
            command
        }
        None => Command::new(binary),
    }
}

#[test]
fn golden_check_output_for_both_backends() {
    for case in cases(&golden_dir()) {
        let config = load(&case);
        for backend in [Backend::Nftables, Backend::Iptables] {
            let file = case.join(format!("expected-{}.txt", backend.name()));
            // Features built on nft sets and jhash are refused with iptables, as by `check`.
            let actual = match config.check_backend_supports(backend == Backend::Nftables) {
                Ok(()) => check_text(&config, backend),
                Err(e) => format!("refused: {e}\n"),
            };
            compare(&file, &actual);
        }
    }
}

#[test]
fn golden_rulesets_load_in_the_kernel() {
    for case in cases(&golden_dir()) {
        let config = load(&case);
        let plan = Plan::build(&config, &link_states(&config));
        let (ok, err) = in_fresh_netns(
            "nft",
            &["-c", "-f", "-"],
            &nft::ruleset(&plan, nft::Previous::default()),
        );
        assert!(ok, "{}: nft -c rejected the ruleset: {err}", case.display());
        if config.check_backend_supports(false).is_err() {
            continue;
        }
        for family in Family::ALL.into_iter().filter(|f| plan.has(*f)) {
            let text = iptables::ruleset(&plan, family, &IptablesState::default());
            let tool = format!("{}-restore", family.iptables());
            let (ok, err) = in_fresh_netns(&tool, &["--noflush", "--test"], &text);
            assert!(ok, "{}: {tool} --test rejected it: {err}", case.display());
        }
    }
}

#[test]
fn golden_config_errors_exit_2_with_exact_message() {
    for case in cases(&golden_dir().join("errors")) {
        let out = connmark_lb()
            .arg("check")
            .arg("--uci")
            .arg(config_file(&case))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", case.display());
        assert!(out.stdout.is_empty(), "{}: printed rules", case.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        compare(
            &case.join("expected"),
            &stderr
                .trim()
                .trim_start_matches("connmark-lb: ")
                .to_string()
                .replace('\n', " "),
        );
    }
}
