//! The context every verb and the daemon work in: where the config comes from, the ubus
//! socket, the state directory and the hook, with the steps they share (load and validate the
//! config, resolve the links, plan, print what `check` prints, explain a connection).
//!
//! The command line builds one [`Context`] and dispatches; the daemon holds the same one, so
//! a SIGHUP reload, a ubus `check` or `explain` and the command line take the same path.

use crate::apply::{self, Backend, sysctl};
use crate::config::{Config, Family};
use crate::error::{Error, Result};
use crate::explain::{self, Clock, Explanation, Facts, Moment, Query};
use crate::live::{IpState, IptablesState};
use crate::plan::Plan;
use crate::render::{ip, iptables, nft};
use crate::source::{ConfigSource, LinkState, resolve_links, shared_devices, ubus};
use crate::state;
use serde_json::{Map, Value, json};
use std::path::PathBuf;

/// Where the config, ubus and the state live for this run.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--config`: `ubus call uci get` JSON in a file.
    pub config_json: Option<PathBuf>,
    /// `--uci`: the /etc/config text format.
    pub config_uci: Option<PathBuf>,
    /// `--ubus-socket`; `None`: the system's.
    pub ubus_socket: Option<PathBuf>,
    /// Where applied.json, status.json and the lock live.
    pub state_dir: PathBuf,
    /// The user's event script, run by the daemon when a link changes state.
    pub hook: PathBuf,
}

impl Context {
    /// The config source the options select: a file, or ubus.
    pub fn source(&self) -> Result<ConfigSource> {
        match (&self.config_json, &self.config_uci) {
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
    pub fn resolve_links(&self, config: &Config) -> (Vec<LinkState>, Vec<String>) {
        let (mut states, warnings) = resolve_links(config, &self.ubus_socket());
        warn(&warnings);
        let conflicts = shared_devices(config, &mut states);
        (states, conflicts)
    }

    /// [`Context::resolve_links`] for the daemon and `check`: conflicts are warnings, the
    /// first interface of a device keeps it.
    pub fn link_states(&self, config: &Config) -> Vec<LinkState> {
        let (states, conflicts) = self.resolve_links(config);
        warn(&conflicts);
        states
    }

    /// `apply`: validate, resolve, apply under the lock (or remove our rules when disabled).
    pub fn apply(&self) -> Result<()> {
        let config = self.load_config()?;
        if !config.globals.enabled {
            return self.remove_disabled(&config);
        }
        let (states, conflicts) = self.resolve_links(&config);
        if !conflicts.is_empty() {
            return Err(Error::Links(conflicts.join("; ")));
        }
        apply::apply(&config, states, &self.state_dir).map(drop)
    }

    /// `stop`: remove everything of ours. Only the footprint matters here: no warnings about a
    /// config we are leaving, and an unreadable config still leaves the record to go by.
    pub fn stop(&self) -> Result<()> {
        let config = self.source().and_then(|s| s.load()).ok();
        apply::stop(config.as_ref(), &self.state_dir)
    }

    /// `globals.enabled 0`: apply and run remove our rules instead of installing them.
    pub fn remove_disabled(&self, config: &Config) -> Result<()> {
        println!("connmark-lb: disabled in globals: removing our rules");
        apply::stop(Some(config), &self.state_dir)
    }

    /// `check`: what `apply` would load now, with links resolved exactly as apply resolves
    /// them (netifd's read-only `status`).
    pub fn check(&self) -> Result<String> {
        let config = self.load_config()?;
        let states = self.link_states(&config);
        let backend = Backend::resolve(config.globals.backend);
        config.check_backend_supports(backend == Backend::Nftables)?;
        Ok(check_text_for(&config, backend, &states))
    }

    /// What `check` prints for `config`, its links resolved now as apply resolves them (the
    /// daemon's ubus `check`).
    pub fn check_text(&self, config: &Config) -> String {
        let states = self.link_states(config);
        check_text_for(config, Backend::resolve(config.globals.backend), &states)
    }

    /// Which way `query` would go now: the plan as apply would build it now, with each link's
    /// liveness from the daemon when one runs, and the kernel's set contents. The command line
    /// and the daemon's ubus `explain` (the LuCI Explain page) both answer with this.
    /// The source's MAC and ingress device come from the router's neighbour entry when the
    /// query does not give them; the returned query holds what was used.
    pub fn explain(&self, query: &Query) -> Result<(Explanation, Plan, Query)> {
        let config = self.load_config()?;
        let mut states = self.link_states(&config);
        // Devices are the same in either family's listing.
        if let Ok(live) = apply::read_ip(Family::Ipv4) {
            states = apply::present_devices(states, &live);
        }
        if let Ok(status) = state::daemon_status(&self.state_dir) {
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
        let mut facts = match apply::nft::list_table_json()? {
            Some(text) => Facts::parse(&text)?,
            None => Facts::default(),
        };
        facts.now = now();
        let query = with_neighbour(query.clone());
        let answer = explain::explain(&config, &plan, &facts, &query);
        Ok((answer, plan, query))
    }

    /// The daemon's ubus `explain` of `{"source", "destination", "protocol", "port"}` (the
    /// last two may be missing or null): the object `connmark-lb explain --json` prints for
    /// the same words, or `{"error": why}` for a question it refuses, as one reply (so the
    /// LuCI page needs no ACL beyond the `connmark-lb` object).
    pub fn explain_call(&self, params: &Map<String, Value>) -> Map<String, Value> {
        let word = |key: &str| match params.get(key) {
            Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let origin = |key: &str| {
            params
                .get(key)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
        };
        let words: Vec<Option<String>> = ["source", "destination", "protocol", "port"]
            .iter()
            .map(|key| word(key))
            .collect();
        let given = words
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |last| last + 1);
        let words: Option<Vec<String>> = words[..given.max(2)].iter().cloned().collect();
        let answer = match words {
            None => Err(Error::Usage(
                "explain: source and destination are needed, and protocol before port".into(),
            )),
            Some(words) => {
                Query::with_origin(&words, origin("mac"), origin("device")).and_then(|query| {
                    self.explain(&query)
                        .map(|(a, plan, query)| a.to_json(&plan, &query))
                })
            }
        };
        // Both are JSON objects.
        answer
            .unwrap_or_else(|error| json!({ "error": error.to_string() }))
            .as_object()
            .cloned()
            .unwrap_or_default()
    }
}

/// `query` with the source's MAC and ingress device from the router's neighbour table where
/// it gives none (a host on a LAN segment of the router has an entry once it talked to it).
fn with_neighbour(mut query: Query) -> Query {
    if query.mac.is_some() && query.dev.is_some() {
        return query;
    }
    let family = if query.src.is_ipv6() { "-6" } else { "-4" };
    let src = query.src.to_string();
    let listing = apply::exec::run("ip", &["-j", family, "neigh", "show", "to", &src], "");
    if let Some((dev, mac)) = listing.ok().and_then(|text| crate::live::neighbour(&text)) {
        query.dev = query.dev.or(Some(dev));
        query.mac = query.mac.or(mac);
    }
    query
}

/// Now, on the router's local clock (the C library's time zone: `TZ`, else /etc/localtime)
/// and in UTC.
fn now() -> Moment {
    // SAFETY: time() with a null pointer only returns the time.
    let t = unsafe { libc::time(std::ptr::null_mut()) };
    let clock = |local: bool| {
        // SAFETY: an all-zero tm is a valid value; localtime_r and gmtime_r write only into
        // the tm they are given and read only `t`.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        unsafe {
            if local {
                libc::localtime_r(&t, &mut tm);
            } else {
                libc::gmtime_r(&t, &mut tm);
            }
        }
        let part = |n: libc::c_int| u32::try_from(n).unwrap_or(0);
        Clock {
            seconds: part(tm.tm_hour) * 3600 + part(tm.tm_min) * 60 + part(tm.tm_sec),
            weekday: (part(tm.tm_wday) + 6) % 7,
            monthday: part(tm.tm_mday),
        }
    };
    Moment {
        local: clock(true),
        utc: clock(false),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn context(uci: PathBuf) -> Context {
        Context {
            config_json: None,
            config_uci: Some(uci),
            ubus_socket: Some(PathBuf::from("/nonexistent/ubus.sock")),
            state_dir: PathBuf::from("/nonexistent"),
            hook: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn explain_refuses_incomplete_or_bad_questions_with_a_message() {
        let context = context(PathBuf::from("/nonexistent.uci"));
        for (params, expected) in [
            (
                json!({"source": "192.168.1.2"}),
                "source and destination are needed",
            ),
            (
                json!({"source": "192.168.1.2", "destination": "10.0.0.1", "port": 80}),
                "protocol before port",
            ),
            (
                json!({"source": "192.168.1.2", "destination": "x"}),
                "DST \"x\" is not an IP address",
            ),
            (
                json!({"source": "192.168.1.2", "destination": "10.0.0.1", "protocol": "icmp", "port": 80}),
                "DPORT needs PROTO tcp or udp",
            ),
        ] {
            let reply = context.explain_call(params.as_object().unwrap());
            let error = reply["error"].as_str().unwrap_or_default();
            assert!(error.contains(expected), "{params}: {reply:?}");
        }
    }
}
