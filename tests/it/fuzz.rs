//! A seeded, bounded fuzz test of the two config readers (UCI text and `uci get` JSON): a few
//! thousand mutations of the golden configs, each read, validated and (when valid) rendered in
//! process, every tenth also run through the real binary's `check`. Whatever the input, the
//! outcome is a config or a config error (exit 2), never a panic, another exit code or a hang.
//! Seeded, so a failure names the case that reproduces it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::time::{Duration, Instant};

use connmark_lb::apply::Backend;
use connmark_lb::config::Config;
use connmark_lb::config::raw::RawConfig;
use connmark_lb::config::uci_text;
use connmark_lb::error::Result;
use serde_json::{Value, json};

const SEED: u64 = 0x00c0_ffee_5eed_2026;
const CASES_PER_FORMAT: usize = 4000;
/// Every this many cases also runs the binary.
const BINARY_EVERY: usize = 10;
/// Time one case may take in process; the binary gets more (process start on a busy machine).
const CASE_BOUND: Duration = Duration::from_secs(1);
const BINARY_BOUND: Duration = Duration::from_secs(5);

/// xorshift64*: small, fast and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Values that have broken parsers before: bounds, signs, radixes, quotes, escapes, control
/// characters, long and non-ASCII text, addresses and prefixes just out of range.
const NASTY: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "1000",
    "1001",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "0x",
    "0xffffffff",
    "0x3F00",
    "0x0",
    "0x1",
    "0x80000000",
    "1e9",
    "nan",
    "inf",
    "0.0",
    "0.0001",
    "3600",
    "3600.1",
    " 1",
    "1 ",
    "'",
    "\"",
    "\\",
    "\\\n",
    "\n",
    "\t",
    "\u{0}",
    "\u{1b}[2J",
    "#",
    "a b",
    "10.0.0.1",
    "10.0.0.0/33",
    "999.1.1.1",
    "10.0.0.0/8",
    "::1",
    "eth0",
    "lo",
    "a-device-name-too-long",
    "wan",
    "default",
    "unreachable",
    "blackhole",
    "tcp",
    "udp",
    "icmp",
    "256",
    "80-79",
    "1-65535",
    "22,80,443",
    "nftables",
    "iptables",
    "round-robin",
    "random",
    "ünïcödé",
    "𝕏",
    "23:59:59",
    "24:00",
    "7:5",
    "Mon tue",
    "!Sun",
    "! ",
    "31",
    "02:00:5e:10:00:01",
    "2-0-5e-10-0-1",
    "02:00:5e:10:00",
    "br-guest",
];

const KEYWORDS: &[&str] = &[
    "config",
    "option",
    "list",
    "package",
    "globals",
    "interface",
    "member",
    "policy",
    "rule",
    "enabled",
    "device",
    "gateway",
    "weight",
    "metric",
    "mark_mask",
    "table_base",
    "priority_base",
    "use_member",
    "use_policy",
    "last_resort",
    "lan",
    "track_ip",
    "interval",
    "proto",
    "dest_port",
    "src_ip",
    "dns",
    "dns_follow",
    "start_time",
    "stop_time",
    "weekdays",
    "monthdays",
    "utc_time",
    "src_mac",
    "src_dev",
];

/// The golden configs (every `config.uci` and `config.json` under tests/golden).
fn corpus() -> (Vec<String>, Vec<String>) {
    let (mut uci, mut json) = (Vec::new(), Vec::new());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    let mut dirs = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("golden dir") {
            let path = entry.expect("entry").path();
            match path.file_name().and_then(|n| n.to_str()) {
                _ if path.is_dir() => dirs.push(path),
                Some("config.uci") => uci.push(std::fs::read_to_string(&path).expect("read")),
                Some("config.json") => json.push(std::fs::read_to_string(&path).expect("read")),
                _ => {}
            }
        }
    }
    uci.sort();
    json.sort();
    assert!(uci.len() >= 3 && !json.is_empty(), "golden corpus missing");
    (uci, json)
}

/// Byte-level damage: flip, insert, delete or duplicate a span (kept valid UTF-8 by working on
/// characters).
fn mangle(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 if at < chars.len() => chars[at] = char::from(rng.below(128) as u8),
            1 => chars.splice(at..at, rng.pick(NASTY).chars()).for_each(drop),
            2 => {
                let end = (at + rng.below(20)).min(chars.len());
                chars.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(40)).min(chars.len());
                let copy: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, copy).for_each(drop);
            }
            _ => chars
                .splice(at..at, rng.pick(KEYWORDS).chars())
                .for_each(drop),
        }
    }
    chars.into_iter().collect()
}

/// Line-level UCI changes: a value replaced, an option or section added, lines shuffled.
fn mutate_uci(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..=rng.below(3) {
        let at = rng.below(lines.len() + 1);
        let value = rng.pick(NASTY).replace('\'', "'\\''");
        match rng.below(5) {
            0 if at < lines.len() => {
                let words: Vec<&str> = lines[at].split_whitespace().take(2).collect();
                lines[at] = format!("\t{} '{value}'", words.join(" "));
            }
            1 => lines.insert(at, format!("\toption {} '{value}'", rng.pick(KEYWORDS))),
            2 => lines.insert(at, format!("\tlist {} '{value}'", rng.pick(KEYWORDS))),
            3 => lines.insert(
                at,
                format!("config {} '{}'", rng.pick(KEYWORDS), rng.pick(KEYWORDS)),
            ),
            _ if lines.len() > 1 => {
                let other = rng.below(lines.len());
                let at = at.min(lines.len() - 1);
                lines.swap(at, other);
            }
            _ => {}
        }
    }
    let text = lines.join("\n") + "\n";
    if rng.below(3) == 0 {
        mangle(rng, &text)
    } else {
        text
    }
}

/// A random JSON value, nesting bounded by `depth`.
fn random_json(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64 >> rng.below(64)),
        3 => json!(f64::from(rng.below(10_000) as u32) / 7.0),
        4 => json!(rng.pick(NASTY)),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut map = serde_json::Map::new();
            for _ in 0..rng.below(4) {
                map.insert(rng.pick(KEYWORDS).to_string(), random_json(rng, depth - 1));
            }
            Value::Object(map)
        }
    }
}

/// Tree-level JSON changes: values and keys of sections replaced or added, then sometimes text
/// damage on top.
fn mutate_json(rng: &mut Rng, text: &str) -> String {
    let mut value: Value = serde_json::from_str(text).expect("golden json");
    for _ in 0..=rng.below(3) {
        let Some(values) = value.get_mut("values").and_then(Value::as_object_mut) else {
            break;
        };
        let keys: Vec<String> = values.keys().cloned().collect();
        let name = if keys.is_empty() || rng.below(6) == 0 {
            rng.pick(KEYWORDS).to_string()
        } else {
            rng.pick(&keys).clone()
        };
        let section = values.entry(name).or_insert_with(|| json!({}));
        match (rng.below(4), section.as_object_mut()) {
            (0, _) => *section = random_json(rng, 3),
            (_, Some(options)) => {
                let key = match rng.below(3) {
                    0 => ".type".to_string(),
                    1 => ".name".to_string(),
                    _ => rng.pick(KEYWORDS).to_string(),
                };
                let new = if rng.below(2) == 0 {
                    json!(rng.pick(NASTY))
                } else {
                    random_json(rng, 2)
                };
                options.insert(key, new);
            }
            _ => {}
        }
    }
    if rng.below(6) == 0 {
        value = random_json(rng, 4);
    }
    let text = value.to_string();
    if rng.below(4) == 0 {
        mangle(rng, &text)
    } else {
        text
    }
}

/// Reads, validates (also against the backend `check` would use) and (when valid) renders for
/// both backends; a config error must have exit code 2.
fn read_in_process(text: &str, uci: bool) -> Result<String> {
    let raw = if uci {
        uci_text::parse(text)?
    } else {
        RawConfig::from_json_text(text)?
    };
    let config = Config::from_raw(&raw)?;
    config.check_backend_supports(Backend::resolve(config.globals.backend) == Backend::Nftables)?;
    Ok(connmark_lb::context::check_text(&config, Backend::Nftables)
        + &connmark_lb::context::check_text(&config, Backend::Iptables))
}

fn fuzz(uci: bool) {
    let (uci_corpus, json_corpus) = corpus();
    let corpus = if uci { uci_corpus } else { json_corpus };
    let dir = std::env::temp_dir().join(format!("cmlb-fuzz-{}-{uci}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut rng = Rng(SEED ^ u64::from(uci));
    let (mut valid, mut errors) = (0, 0);
    for case in 0..CASES_PER_FORMAT {
        let base = rng.pick(&corpus).clone();
        let text = if uci {
            mutate_uci(&mut rng, &base)
        } else {
            mutate_json(&mut rng, &base)
        };
        let shown = || format!("case {case} (seed {SEED:#x}):\n{}", text.escape_debug());
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| read_in_process(&text, uci)))
            .unwrap_or_else(|_| panic!("panicked on {}", shown()));
        assert!(
            started.elapsed() < CASE_BOUND,
            "took {:?}: {}",
            started.elapsed(),
            shown()
        );
        match outcome {
            Ok(_) => valid += 1,
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{e}: {}", shown());
                errors += 1;
            }
        }
        if case % BINARY_EVERY == 0 {
            let path = dir.join(if uci { "case.uci" } else { "case.json" });
            std::fs::write(&path, &text).expect("write case");
            let flag = if uci { "--uci" } else { "--config" };
            let started = Instant::now();
            let output = Command::new(env!("CARGO_BIN_EXE_connmark-lb"))
                .args(["check", flag])
                .arg(&path)
                .args(["--ubus-socket", "/nonexistent/ubus.sock"])
                .output()
                .expect("run connmark-lb check");
            assert!(
                started.elapsed() < BINARY_BOUND,
                "binary took too long: {}",
                shown()
            );
            let code = output.status.code();
            assert!(
                code == Some(0) || code == Some(2),
                "exit {:?}: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                shown()
            );
            assert_eq!(code == Some(0), outcome_ok(&text, uci), "{}", shown());
        }
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
    eprintln!("fuzz uci={uci}: {valid} valid, {errors} refused configs");
    // The mutations must reach both sides, or the test proves little.
    assert!(valid >= CASES_PER_FORMAT / 20, "only {valid} valid cases");
    assert!(
        errors >= CASES_PER_FORMAT / 5,
        "only {errors} invalid cases"
    );
}

fn outcome_ok(text: &str, uci: bool) -> bool {
    read_in_process(text, uci).is_ok()
}

#[test]
fn uci_reader_survives_mutated_configs() {
    fuzz(true);
}

#[test]
fn json_reader_survives_mutated_configs() {
    fuzz(false);
}
