//! The command line: one verb plus where the config comes from.

use crate::apply::{self, Backend, sysctl};
use crate::config::{Config, Family};
use crate::daemon::{self, status};
use crate::error::{Context, Error, Result};
use crate::explain;
use crate::inspect;
use crate::live::{IpState, IptablesState};
use crate::names::{DEFAULT_HOOK, DEFAULT_STATE_DIR};
use crate::plan::{LinkState, Plan};
use crate::render::{ip, iptables, nft};
use crate::source::{ConfigSource, resolve_links, shared_devices, ubus};
use argh::FromArgs;
use std::path::PathBuf;
use std::str::FromStr;

/// Multi-WAN connmark load balancing for OpenWrt: spreads new LAN connections over all WAN
/// links, keeps each connection on its link, fails over when a link dies.
#[derive(FromArgs, Debug)]
pub struct Args {
    /// apply | check | stop | run | status | explain (apply: load the rules atomically;
    /// check: print them, change nothing; stop: remove everything we added; run: apply, then
    /// track link health and fail over until SIGTERM, SIGHUP reloads; status: print the
    /// daemon's per-link state; explain SRC DST [PROTO [DPORT]]: which rule, policy and link a
    /// new connection would get now, changing nothing)
    #[argh(positional)]
    pub verb: Verb,
    /// explain's SRC DST [PROTO [DPORT]]
    #[argh(positional)]
    pub operands: Vec<String>,
    /// explain: print one JSON object (the form a web page reads)
    #[argh(switch)]
    pub json: bool,
    /// config as `ubus call uci get` JSON ({"values": {...}})
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// config in the /etc/config text format
    #[argh(option)]
    pub uci: Option<PathBuf>,
    /// ubus socket (default /var/run/ubus/ubus.sock, else /var/run/ubus.sock): the config
    /// when neither --config nor --uci is given, netifd's links, and `run`'s ubus object
    #[argh(option)]
    pub ubus_socket: Option<PathBuf>,
    /// directory for applied.json and status.json (default /var/run/connmark-lb)
    #[argh(option, default = "PathBuf::from(DEFAULT_STATE_DIR)")]
    pub state_dir: PathBuf,
    /// script run by `run` when a link goes down or comes back (default
    /// /etc/connmark-lb.user)
    #[argh(option, default = "PathBuf::from(DEFAULT_HOOK)")]
    pub hook: PathBuf,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Apply,
    Check,
    Stop,
    Run,
    Status,
    Explain,
}

impl FromStr for Verb {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "apply" => Ok(Verb::Apply),
            "check" => Ok(Verb::Check),
            "stop" => Ok(Verb::Stop),
            "run" => Ok(Verb::Run),
            "status" => Ok(Verb::Status),
            "explain" => Ok(Verb::Explain),
            _ => Err(format!(
                "unknown verb \"{s}\": expected apply, check, stop, run, status or explain"
            )),
        }
    }
}

impl Args {
    /// The config source the options select: a file, or ubus.
    pub fn source(&self) -> Result<ConfigSource> {
        match (&self.config, &self.uci) {
            (Some(_), Some(_)) => Err(Error::Usage("give --config or --uci, not both".into())),
            (Some(path), None) => Ok(ConfigSource::Json(path.clone())),
            (None, Some(path)) => Ok(ConfigSource::Uci(path.clone())),
            (None, None) => Ok(ConfigSource::Ubus(self.ubus_socket())),
        }
    }

    /// The ubus socket: `--ubus-socket`, else the one this OpenWrt release uses.
    pub fn ubus_socket(&self) -> PathBuf {
        self.ubus_socket
            .clone()
            .unwrap_or_else(ubus::default_socket)
    }

    /// Reads and validates the config from the chosen source; warnings go to stderr.
    pub fn load_config(&self) -> Result<Config> {
        let config = self.source()?.load()?;
        warn(&config.warnings);
        Ok(config)
    }

    /// Current link states (netifd lookups over ubus where the config asks for them), and the
    /// conflicts of interfaces resolving to one device (the later one is down).
    pub fn resolve(&self, config: &Config) -> (Vec<LinkState>, Vec<String>) {
        let (mut states, warnings) = resolve_links(config, &self.ubus_socket());
        warn(&warnings);
        let conflicts = shared_devices(config, &mut states);
        (states, conflicts)
    }

    /// [`Args::resolve`] for the daemon and `check`: conflicts are warnings, the first
    /// interface of a device keeps it.
    pub fn link_states(&self, config: &Config) -> Vec<LinkState> {
        let (states, conflicts) = self.resolve(config);
        warn(&conflicts);
        states
    }
}

fn warn(warnings: &[String]) {
    for warning in warnings {
        eprintln!("connmark-lb: warning: {warning}");
    }
}

/// Link states from fixed config values only (nothing is asked).
pub fn link_states(config: &Config) -> Vec<LinkState> {
    config
        .interfaces
        .iter()
        .map(LinkState::from_config)
        .collect()
}

/// Runs one verb.
pub fn run(args: &Args) -> Result<()> {
    if args.verb != Verb::Explain && (!args.operands.is_empty() || args.json) {
        return Err(Error::Usage(
            "only explain takes addresses and --json".into(),
        ));
    }
    match args.verb {
        Verb::Explain => explain(args),
        Verb::Check => {
            let config = args.load_config()?;
            // Links resolved exactly as apply resolves them (netifd's read-only `status`), so
            // check prints what apply would load now.
            let states = args.link_states(&config);
            let backend = Backend::resolve(config.globals.backend);
            config.check_backend_supports(backend == Backend::Nftables)?;
            print!("{}", check_text_for(&config, backend, &states));
            Ok(())
        }
        Verb::Apply => {
            let config = args.load_config()?;
            if !config.globals.enabled {
                return remove_disabled(args, &config);
            }
            let (states, conflicts) = args.resolve(&config);
            if !conflicts.is_empty() {
                return Err(Error::Protocol(conflicts.join("; ")));
            }
            apply::apply(&config, states, &args.state_dir).map(drop)
        }
        Verb::Stop => {
            // Only the footprint matters here: no warnings about a config we are leaving.
            let config = args.source().and_then(|s| s.load()).ok();
            apply::stop(config.as_ref(), &args.state_dir).context("stop")
        }
        Verb::Run => {
            let load_config = || args.load_config();
            let resolve = |config: &Config| args.link_states(config);
            let options = daemon::Options {
                load_config: &load_config,
                link_states: &resolve,
                state_dir: &args.state_dir,
                hook: &args.hook,
                ubus_socket: args.ubus_socket.as_deref(),
                check: &|config, states| {
                    check_text_for(config, Backend::resolve(config.globals.backend), states)
                },
                explain: &|params| inspect::explain(args, params),
            };
            match daemon::run(&options)? {
                daemon::Exit::Signal(_) => Ok(()),
                daemon::Exit::Disabled(config) => remove_disabled(args, &config),
            }
        }
        Verb::Status => {
            let status = status::load(&args.state_dir)?;
            let text = serde_json::to_string_pretty(&status)
                .map_err(|e| Error::Protocol(format!("encoding the status: {e}")))?;
            println!("{text}");
            Ok(())
        }
    }
}

/// `explain`: [`explain_now`], printed as text or as one JSON object.
fn explain(args: &Args) -> Result<()> {
    let query = explain::Query::parse(&args.operands)?;
    let (answer, plan) = explain_now(args, &query)?;
    if args.json {
        println!("{}", answer.to_json(&plan, &query));
    } else {
        print!("{}", answer.to_text(&plan, &query));
    }
    Ok(())
}

/// Which way `query` would go now: the plan as apply would build it now, with each link's
/// liveness from the daemon when one runs, and the kernel's set contents. The command line and
/// the daemon's ubus `explain` (the LuCI Explain page) both answer with this.
pub fn explain_now(args: &Args, query: &explain::Query) -> Result<(explain::Explanation, Plan)> {
    let config = args.load_config()?;
    let mut states = args.link_states(&config);
    // Devices are the same in either family's listing.
    if let Ok(live) = apply::read_ip(Family::Ipv4) {
        states = apply::present_devices(states, &live);
    }
    if let Ok(status) = status::load(&args.state_dir) {
        for link in status["links"].as_array().into_iter().flatten() {
            let usable = link["usable"].as_bool().unwrap_or(false);
            if let Some(i) = config
                .interfaces
                .iter()
                .position(|i| link["interface"] == i.name.as_str())
            {
                states[i].up &= usable;
            }
        }
    }
    let plan = Plan::build(&config, &states);
    let facts = explain::Facts::read()?;
    let answer = explain::explain(&config, &plan, &facts, query);
    Ok((answer, plan))
}

/// `globals.enabled 0`: apply and run remove our rules instead of installing them.
fn remove_disabled(args: &Args, config: &Config) -> Result<()> {
    println!("connmark-lb: disabled in globals: removing our rules");
    apply::stop(Some(config), &args.state_dir)
}

/// Everything `apply` would load with links known only from the config, as text: firewall
/// rules, ip batch (from an empty state) and sysctls. Pure: used by the golden tests.
pub fn check_text(config: &Config, backend: Backend) -> String {
    check_text_for(config, backend, &link_states(config))
}

/// [`check_text`] for the given link states (what `check` resolved, as apply would).
pub fn check_text_for(config: &Config, backend: Backend, states: &[LinkState]) -> String {
    let plan = Plan::build(config, states);
    let mut out = String::new();
    match backend {
        Backend::Nftables => {
            out.push_str("# nftables rules\n");
            out.push_str(&nft::ruleset(&plan, nft::Previous::default()));
        }
        Backend::Iptables => {
            for family in Family::ALL.into_iter().filter(|f| plan.has(*f)) {
                out.push_str(&format!("# {} rules\n", family.iptables()));
                out.push_str(&iptables::ruleset(&plan, family, &IptablesState::default()));
            }
        }
    }
    for family in Family::ALL.into_iter().filter(|f| plan.has(*f)) {
        let ops = ip::diff(&plan, family, &IpState::default(), &[]);
        let flag = match family {
            Family::Ipv4 => "",
            Family::Ipv6 => " -6",
        };
        out.push_str(&format!("# ip{flag} -batch\n{}", ip::batch(&ops)));
    }
    out.push_str("# sysctl\n");
    out.push_str(&sysctl::describe(&plan));
    out
}
