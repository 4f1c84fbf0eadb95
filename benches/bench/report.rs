//! The results: targets checked against the figures, BENCH.md and results.json.
//!
//! Longer than ~600 lines on purpose: one writer per BENCH.md section, each reading its own
//! figures; splitting them apart would scatter the one document they make.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::Options;
use crate::apply_cost::{ApplyCost, Start};
use crate::balance::BalanceQuality;
use crate::daemon::DaemonFigures;
use crate::dataplane::Compared;
use crate::dataplane::Dataplane;
use crate::footprint::Artifact;
use crate::lbconfig::Backend;
use crate::measure::{ExecTrace, Summary};
use crate::nft_cost::NftStep;
use crate::router::Setup;

/// The machine the figures come from.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub tools: Vec<String>,
}

impl Machine {
    fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown".to_string(),
                |(_, name)| name.trim().to_string(),
            );
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let tools = [
            ("nft", "--version"),
            ("iptables", "--version"),
            ("ip", "-V"),
            ("iperf3", "--version"),
            ("strace", "-V"),
            ("rustc", "--version"),
        ]
        .iter()
        .map(|(tool, flag)| first_line(tool, &[flag]))
        .collect();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel,
            tools,
        }
    }
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|out| {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_else(|e| format!("{program}: {e}"))
}

/// One target we hold ourselves to, and where we stand.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub required: String,
    pub measured: String,
    /// None: not measured in this run.
    pub met: Option<bool>,
}

/// What the measurements returned.
pub struct Figures {
    pub apply: Vec<ApplyCost>,
    pub nft_steps: Vec<NftStep>,
    pub dataplane: Dataplane,
    pub balance: Vec<BalanceQuality>,
    pub daemon: DaemonFigures,
    pub artifacts: Vec<Artifact>,
    pub sections: Vec<Section>,
}

/// A measurement that renders itself: its BENCH.md text, its results.json value and its
/// targets. Features add one of these (see `sections::ALL`) instead of widening the fixed
/// tables above.
#[derive(Debug, Clone)]
pub struct Section {
    /// The key in results.json's `sections` and the name `--only` selects.
    pub key: &'static str,
    pub title: String,
    /// Markdown below the section's heading.
    pub markdown: String,
    pub json: Value,
    pub targets: Vec<Target>,
}

/// Everything one bench run found.
#[derive(Debug, Clone)]
pub struct Results {
    pub date: String,
    pub mode: &'static str,
    pub seconds: f64,
    pub machine: Machine,
    pub runs: usize,
    pub dataplane_runs: usize,
    pub apply: Vec<ApplyCost>,
    pub nft_steps: Vec<NftStep>,
    pub dataplane: Dataplane,
    pub balance: Vec<BalanceQuality>,
    pub daemon: DaemonFigures,
    pub artifacts: Vec<Artifact>,
    pub sections: Vec<Section>,
    pub targets: Vec<Target>,
}

impl Results {
    /// Adds the machine, the date and the targets to the figures.
    pub fn new(options: &Options, figures: Figures, started: Instant) -> Results {
        let Figures {
            apply,
            nft_steps,
            dataplane,
            balance,
            daemon,
            artifacts,
            sections,
        } = figures;
        let mut results = Results {
            date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            mode: if options.smoke { "smoke" } else { "full" },
            seconds: started.elapsed().as_secs_f64(),
            machine: Machine::probe(),
            runs: options.runs,
            dataplane_runs: options.dataplane_runs,
            apply,
            nft_steps,
            dataplane,
            balance,
            daemon,
            artifacts,
            sections,
            targets: Vec::new(),
        };
        results.targets = results.evaluate();
        results
            .targets
            .extend(results.sections.iter().flat_map(|s| s.targets.clone()));
        results
    }

    fn apply_row(&self, links: usize, setup: Setup, start: Start) -> Option<&ApplyCost> {
        self.apply
            .iter()
            .find(|r| r.links == links && r.setup == setup.key() && r.start == start)
    }

    /// Seed median over ours, for one link count and start.
    pub fn apply_speedup(&self, links: usize, backend: Backend, start: Start) -> Option<f64> {
        let ours = self.apply_row(links, Setup::Ours(backend), start)?;
        let seed = self.apply_row(links, Setup::Seed, start)?;
        Some(seed.wall_ms.median / ours.wall_ms.median)
    }

    fn evaluate(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        for start in [Start::Clean, Start::Reapply] {
            let speedup = self.apply_speedup(2, Backend::Nftables, start);
            targets.push(Target {
                name: format!("apply, 2 links, {} (nftables)", start.label()),
                required: ">= 10x faster than the seed recipe (medians)".into(),
                measured: speedup.map_or("-".into(), |s| format!("{s:.1}x")),
                met: speedup.map(|s| s >= 10.0),
            });
        }
        for backend in [Backend::Nftables, Backend::Iptables] {
            let counts: Vec<String> = [Start::Clean, Start::Reapply]
                .iter()
                .map(|&start| {
                    let per_n: Vec<String> = self
                        .apply
                        .iter()
                        .filter(|r| r.setup == Setup::Ours(backend).key() && r.start == start)
                        .map(|r| r.trace.processes.to_string())
                        .collect();
                    format!("{}: {}", start.label(), per_n.join("/"))
                })
                .collect();
            let constant = [Start::Clean, Start::Reapply].iter().all(|&start| {
                let mut counts = self
                    .apply
                    .iter()
                    .filter(|r| r.setup == Setup::Ours(backend).key() && r.start == start)
                    .map(|r| r.trace.processes);
                counts
                    .next()
                    .is_some_and(|first| counts.all(|c| c == first))
            });
            targets.push(Target {
                name: format!("processes per apply ({})", backend.name()),
                required: "constant in the number of links".into(),
                measured: format!("{} for {} links", counts.join(", "), self.link_list()),
                met: Some(constant),
            });
        }
        for backend in [Backend::Nftables, Backend::Iptables] {
            let key = Setup::Ours(backend).key();
            for (what, figures, floor) in [
                ("throughput", &self.dataplane.throughput_gbps, 97.0),
                (
                    "new-connection rate",
                    &self.dataplane.connections_per_second,
                    90.0,
                ),
            ] {
                let percent = figures[key].percent_of_plain.median;
                targets.push(Target {
                    name: format!("{what} ({})", backend.name()),
                    required: format!(">= {floor}% of plain forwarding"),
                    measured: format!("{percent:.1}% (median of per-run ratios)"),
                    met: Some(percent >= floor),
                });
            }
        }
        for (mode, limit) in [("round-robin", 1.0), ("random", 3.0)] {
            let worst = self
                .balance
                .iter()
                .filter(|b| b.balance == mode)
                .map(|b| b.error_points.max)
                .fold(None, |acc: Option<f64>, e| {
                    Some(acc.map_or(e, |a| a.max(e)))
                });
            targets.push(Target {
                name: format!("{mode} share error"),
                required: format!(
                    "<= {limit} point(s) at {} connections",
                    self.balance.first().map_or(0, |b| b.connections_per_run)
                ),
                measured: worst.map_or("-".into(), |w| {
                    format!("{w:.2} points (worst run, all weight sets and backends)")
                }),
                met: worst.map(|w| w <= limit),
            });
        }
        let binary = self.artifacts.iter().find(|a| a.label == "static-x86_64");
        targets.push(Target {
            name: "static x86_64 binary".into(),
            required: "<= 700 KiB".into(),
            measured: binary.map_or("-".into(), |a| format!("{:.0} KiB", a.kib())),
            met: binary.map(|a| a.kib() <= 700.0),
        });
        let rss = &self.daemon.rss_kib;
        targets.push(Target {
            name: format!("daemon RSS, {} links", self.daemon.rss_links),
            required: "<= 2 MiB".into(),
            measured: format!("{:.0} KiB (largest sample)", rss.max),
            met: Some(rss.max <= 2048.0),
        });
        targets
    }

    fn link_list(&self) -> String {
        let mut links: Vec<usize> = self.apply.iter().map(|r| r.links).collect();
        links.dedup();
        links
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// What the smoke run must find for the bench to count as working.
pub fn check_smoke(results: &Results) {
    for row in &results.apply {
        assert!(row.wall_ms.min > 0.0, "apply time of {row:?}");
        if row.setup == Setup::Seed.key() {
            // The recipe's process count follows from the script: 15 + 16 per link.
            assert_eq!(
                row.trace.processes,
                15 + 16 * row.links,
                "processes the tracer found for the seed recipe: {:?}",
                row.trace
            );
        } else {
            let children: Vec<&str> = row.trace.children.keys().map(String::as_str).collect();
            assert!(
                children
                    .iter()
                    .all(|c| ["ip", "nft", "iptables-restore", "iptables-save"].contains(c)),
                "apply ran unexpected programs: {children:?}"
            );
        }
    }
    for row in results.apply.iter().filter(|r| r.start == Start::Clean) {
        if let Some(own) = row.own_peak_kib {
            assert!(
                own.min > 100.0 && own.max < 64.0 * 1024.0,
                "own peak RSS of apply: {own:?}"
            );
        }
    }
    for figures in [
        &results.dataplane.throughput_gbps,
        &results.dataplane.connections_per_second,
    ] {
        assert_eq!(
            figures.len(),
            Setup::ALL.len(),
            "data-plane setups: {figures:?}"
        );
        assert!(figures.values().all(|c| c.value.min > 0.0), "{figures:?}");
    }
    for quality in results
        .balance
        .iter()
        .filter(|b| b.balance == "round-robin")
    {
        assert!(
            quality.error_points.max <= 1.0,
            "round-robin share error over {} connections: {quality:?}",
            quality.connections_per_run
        );
    }
}

/// Reads back what [`write`] wrote: the JSON parses and holds every apply row, and BENCH.md
/// has every section.
pub fn check_written(results: &Results, markdown: &Path, json: &Path) {
    let read = |path: &Path| {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    };
    let value: Value = serde_json::from_str(&read(json))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", json.display()));
    assert_eq!(
        value["apply"].as_array().map(Vec::len),
        Some(results.apply.len()),
        "apply rows in {}",
        json.display()
    );
    let text = read(markdown);
    for heading in [
        "## Targets",
        "## 1. Apply cost",
        "## 2. Data plane",
        "## 3. Balance quality",
        "## 4. Footprint",
        "## 5. Failover",
        "## Findings",
    ] {
        assert!(
            text.contains(heading),
            "{} lacks {heading}",
            markdown.display()
        );
    }
    for section in &results.sections {
        assert!(
            text.contains(&section_heading(results, section)),
            "{} lacks section {}",
            markdown.display(),
            section.key
        );
        assert!(
            value["sections"][section.key].is_object(),
            "{} lacks sections.{}",
            json.display(),
            section.key
        );
    }
}

/// `## N. title`, numbered after the five built-in sections.
fn section_heading(results: &Results, section: &Section) -> String {
    let index = results
        .sections
        .iter()
        .position(|s| s.key == section.key)
        .unwrap_or(0);
    format!("## {}. {}", 6 + index, section.title)
}

/// What `--only` prints: the selected sections' text and targets, nothing written.
pub fn render_sections(sections: &[Section]) -> String {
    let mut md = String::new();
    for section in sections {
        let _ = writeln!(md, "## {}\n\n{}", section.title, section.markdown);
        for t in &section.targets {
            let _ = writeln!(
                md,
                "- target {}: {} -> {} ({:?})",
                t.name, t.required, t.measured, t.met
            );
        }
        let _ = writeln!(md);
    }
    md
}

/// Writes BENCH.md (with bench/notes.md, the findings, appended) and results.json.
pub fn write(results: &Results, markdown: &Path, json: &Path, repo: &Path) {
    for path in [markdown, json] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
    }
    let notes_path = repo.join("bench/notes.md");
    let notes = std::fs::read_to_string(&notes_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", notes_path.display()));
    let text = format!("{}{notes}", render_markdown(results));
    std::fs::write(markdown, text).unwrap_or_else(|e| panic!("write {}: {e}", markdown.display()));
    let data = serde_json::to_string_pretty(&results_json(results))
        .unwrap_or_else(|e| panic!("JSON: {e}"));
    std::fs::write(json, data + "\n").unwrap_or_else(|e| panic!("write {}: {e}", json.display()));
}

fn mmm(s: &Summary, digits: usize) -> String {
    format!(
        "{:.d$} / **{:.d$}** / {:.d$}",
        s.min,
        s.median,
        s.max,
        d = digits
    )
}

fn render_markdown(r: &Results) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# connmark-lb benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `make bench` on {} ({} run, {:.0} s). Every figure is min / **median** / \
         max over {} runs ({} for the data plane) unless it says otherwise; speed-ups compare \
         medians. Machine: {}, {} cores, kernel {}. Tools: {}.\n",
        r.date,
        r.mode,
        r.seconds,
        r.runs,
        r.dataplane_runs,
        r.machine.cpu,
        r.machine.cores,
        r.machine.kernel,
        r.machine.tools.join("; ")
    );
    let _ = writeln!(
        w,
        "Re-run: `make bench` (as root; about 13 minutes on 2 cores, builds included) \
         rewrites this file and `bench/results.json`. `cargo test --bench bench -- --smoke` \
         is the seconds-long check that `make test` runs.\n"
    );

    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(
        w,
        "| target | required | measured | met |\n|---|---|---|---|"
    );
    for t in &r.targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**NO**",
            None => "not measured",
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {met} |",
            t.name, t.required, t.measured
        );
    }

    let _ = writeln!(w, "\n## 1. Apply cost\n");
    let _ = writeln!(
        w,
        "Wall time of one apply inside the router namespace (spawned directly, no `ip netns \
         exec`), from a bare router (`clean`) and applying the same config again \
         (`re-apply`). Processes: successful `execve` calls of a traced run (the same in \
         every run), the program itself included (`strace -f`). Speed-up: seed median / \
         ours.\n"
    );
    let _ = writeln!(
        w,
        "| links | setup | start | wall ms | processes | speed-up vs seed |\n\
         |---|---|---|---|---|---|"
    );
    for row in &r.apply {
        let speedup = match row.setup {
            "ours-nft" => r.apply_speedup(row.links, Backend::Nftables, row.start),
            "ours-ipt" => r.apply_speedup(row.links, Backend::Iptables, row.start),
            _ => None,
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            row.links,
            setup_label(row.setup),
            row.start.label(),
            mmm(&row.wall_ms, 1),
            row.trace.processes,
            speedup.map_or("".into(), |s| format!("{s:.1}x"))
        );
    }
    let _ = writeln!(
        w,
        "\nWhere the time goes, under strace (only exec and exit stop the tracee): each \
         child's lifetime from exec to exit, summed per program, median of the runs; `self` \
         is the rest of the top process (startup, config, rendering, forks, waiting):\n"
    );
    let _ = writeln!(
        w,
        "| links | setup | start | total ms | children |\n|---|---|---|---|---|"
    );
    for row in &r.apply {
        let mut parts: Vec<String> = row
            .trace
            .children
            .iter()
            .map(|(program, cost)| {
                format!(
                    "{program} x{} {:.1} ms ({:.2} each)",
                    cost.count,
                    cost.total_ms,
                    cost.total_ms / cost.count as f64
                )
            })
            .collect();
        let children: f64 = row.trace.children.values().map(|c| c.total_ms).sum();
        parts.push(format!("self {:.1} ms", row.trace.total_ms - children));
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.1} | {} |",
            row.links,
            setup_label(row.setup),
            row.start.label(),
            row.trace.total_ms,
            parts.join(", ")
        );
    }

    let _ = writeln!(
        w,
        "\nnft's own cost for the 2-link ruleset on this kernel (bare router before each \
         step; `present`: our table loaded first):\n"
    );
    let _ = writeln!(w, "| nft step | wall ms |\n|---|---|");
    for step in &r.nft_steps {
        let _ = writeln!(w, "| {} | {} |", step.step, mmm(&step.wall_ms, 1));
    }

    let d = &r.dataplane;
    let _ = writeln!(w, "\n## 2. Data plane ({} links)\n", d.links);
    let _ = writeln!(
        w,
        "One TCP stream LAN -> server through the router (iperf3, {} s measured after 1 s \
         left out), and the rate of short connections ({} per run: connect, read one line, \
         close; {} parallel clients). Each run installs every setup on the bare router in \
         rotating order. `% of plain`: the setup's figure over plain forwarding's in the same \
         run, min / **median** / max over the runs.\n",
        d.iperf_seconds,
        d.connections_per_run,
        crate::dataplane::RATE_WORKERS
    );
    let _ = writeln!(
        w,
        "| setup | Gbit/s | % of plain | connections/s | % of plain |\n|---|---|---|---|---|"
    );
    for setup in Setup::ALL {
        let (Some(t), Some(c)) = (
            d.throughput_gbps.get(setup.key()),
            d.connections_per_second.get(setup.key()),
        ) else {
            continue;
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            setup.label(),
            mmm(&t.value, 2),
            mmm(&t.percent_of_plain, 1),
            mmm(&c.value, 0),
            mmm(&c.percent_of_plain, 1)
        );
    }

    let _ = writeln!(w, "\n## 3. Balance quality\n");
    let _ = writeln!(
        w,
        "Real TCP connections LAN -> server, counted by the source address the server saw \
         (which link carried them). Error: the largest distance of any link's share from its \
         weight's share, in percentage points.\n"
    );
    let _ = writeln!(
        w,
        "| backend | weights | balance | connections | error (points) | \
         shares % (median per link) |\n|---|---|---|---|---|---|"
    );
    for b in &r.balance {
        let shares: Vec<String> = b
            .shares_percent
            .iter()
            .map(|s| format!("{:.2}", s.median))
            .collect();
        let weights: Vec<String> = b.weights.iter().map(u32::to_string).collect();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            b.backend,
            weights.join(":"),
            b.balance,
            b.connections_per_run,
            mmm(&b.error_points, 2),
            shares.join(" / ")
        );
    }

    let _ = writeln!(w, "\n## 4. Footprint\n");
    let _ = writeln!(w, "| item | size |\n|---|---|");
    for a in &r.artifacts {
        let _ = writeln!(
            w,
            "| {} (`{}`) | {} bytes ({:.0} KiB) |",
            a.label,
            a.path.display(),
            a.bytes,
            a.kib()
        );
    }
    for row in r.apply.iter().filter(|row| row.own_peak_kib.is_some()) {
        if let Some(own) = &row.own_peak_kib {
            let _ = writeln!(
                w,
                "| peak RSS of `apply` itself, {} links, {} (KiB) | {} |",
                row.links,
                setup_label(row.setup),
                mmm(own, 0)
            );
        }
    }
    let _ = writeln!(
        w,
        "| RSS of `run` tracking {} links (KiB, VmRSS every 2 s) | {} |",
        r.daemon.rss_links,
        mmm(&r.daemon.rss_kib, 0)
    );
    let _ = writeln!(
        w,
        "| peak RSS of `run` tracking {} links (KiB, VmHWM at the end) | {} |",
        r.daemon.rss_links, r.daemon.peak_kib
    );
    for row in r.apply.iter().filter(|row| row.start == Start::Clean) {
        let _ = writeln!(
            w,
            "| peak RSS of the largest process of the apply, {} links, {} (KiB; wait4) | {} |",
            row.links,
            setup_label(row.setup),
            mmm(&row.tree_peak_kib, 0)
        );
    }

    let d = &r.daemon;
    let _ = writeln!(w, "\n## 5. Failover (`connmark-lb run`, 2 links)\n");
    let _ = writeln!(
        w,
        "Link 2's ISP starts dropping everything from the router (the device stays up), later \
         passes traffic again. Detection: from the drop rule to status.json saying `down`; \
         recovery: from its removal to `up`. The daemon writes status.json after the rules \
         changed, so new connections avoid the link (use it again) by then. State change: \
         the processes the daemon started in that window (traced with strace) and their \
         lifetime, median of the runs.\n"
    );
    let _ = writeln!(
        w,
        "| tracking | detection s | recovery s | processes per change (down / up) | \
         change ms (down / up) |\n|---|---|---|---|---|"
    );
    for f in &d.failover {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} / {} ({}) | {:.1} / {:.1} |",
            f.setting,
            mmm(&f.detection_s, 2),
            mmm(&f.recovery_s, 2),
            f.down_change.processes,
            f.up_change.processes,
            f.down_change
                .children
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            f.down_change.total_ms,
            f.up_change.total_ms
        );
    }
    let _ = writeln!(w);
    for section in &r.sections {
        let _ = writeln!(w, "{}\n\n{}", section_heading(r, section), section.markdown);
    }
    md
}

fn setup_label(key: &str) -> &'static str {
    Setup::ALL
        .iter()
        .find(|s| s.key() == key)
        .map_or("?", |s| s.label())
}

/// results.json: every figure of the run, with the same names as BENCH.md's tables.
fn results_json(r: &Results) -> Value {
    let m = &r.machine;
    json!({
        "date": r.date,
        "mode": r.mode,
        "seconds": r.seconds,
        "machine": {"cpu": m.cpu, "cores": m.cores, "kernel": m.kernel, "tools": m.tools},
        "runs": r.runs,
        "dataplane_runs": r.dataplane_runs,
        "targets": r.targets.iter().map(|t| json!({
            "name": t.name, "required": t.required, "measured": t.measured, "met": t.met,
        })).collect::<Vec<_>>(),
        "apply": r.apply.iter().map(|a| json!({
            "links": a.links,
            "setup": a.setup,
            "start": a.start.label(),
            "wall_ms": summary(&a.wall_ms),
            "tree_peak_kib": summary(&a.tree_peak_kib),
            "own_peak_kib": a.own_peak_kib.as_ref().map(summary),
            "trace": trace(&a.trace),
        })).collect::<Vec<_>>(),
        "nft_steps": r.nft_steps.iter().map(|n| json!({
            "step": n.step, "wall_ms": summary(&n.wall_ms),
        })).collect::<Vec<_>>(),
        "dataplane": {
            "links": r.dataplane.links,
            "iperf_seconds": r.dataplane.iperf_seconds,
            "connections_per_run": r.dataplane.connections_per_run,
            "throughput_gbps": compared(&r.dataplane.throughput_gbps),
            "connections_per_second": compared(&r.dataplane.connections_per_second),
        },
        "balance": r.balance.iter().map(|b| json!({
            "weights": b.weights,
            "balance": b.balance,
            "backend": b.backend,
            "connections_per_run": b.connections_per_run,
            "error_points": summary(&b.error_points),
            "shares_percent": b.shares_percent.iter().map(summary).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "daemon": {
            "failover": r.daemon.failover.iter().map(|f| json!({
                "setting": f.setting,
                "detection_s": summary(&f.detection_s),
                "recovery_s": summary(&f.recovery_s),
                "down_change": trace(&f.down_change),
                "up_change": trace(&f.up_change),
            })).collect::<Vec<_>>(),
            "rss_links": r.daemon.rss_links,
            "rss_kib": summary(&r.daemon.rss_kib),
            "peak_kib": r.daemon.peak_kib,
        },
        "artifacts": r.artifacts.iter().map(|a| json!({
            "label": a.label, "path": a.path.display().to_string(), "bytes": a.bytes,
        })).collect::<Vec<_>>(),
        "sections": r.sections.iter().map(|s| (s.key.to_string(), s.json.clone()))
            .collect::<Map<String, Value>>(),
    })
}

fn summary(s: &Summary) -> Value {
    json!({"min": s.min, "median": s.median, "max": s.max, "runs": s.runs})
}

fn trace(t: &ExecTrace) -> Value {
    let children: Map<String, Value> = t
        .children
        .iter()
        .map(|(program, cost)| {
            let cost = json!({"count": cost.count, "total_ms": cost.total_ms});
            (program.clone(), cost)
        })
        .collect();
    json!({"processes": t.processes, "children": children, "total_ms": t.total_ms})
}

fn compared(figures: &std::collections::BTreeMap<&'static str, Compared>) -> Value {
    let setups: Map<String, Value> = figures
        .iter()
        .map(|(setup, c)| {
            let figure = json!({
                "value": summary(&c.value),
                "percent_of_plain": summary(&c.percent_of_plain),
            });
            (setup.to_string(), figure)
        })
        .collect();
    Value::Object(setups)
}
