//! The command line: one verb plus where the config comes from. This module parses and
//! dispatches; the work is done by [`Context`].

use crate::context::Context;
use crate::daemon;
use crate::error::{Context as _, Error, Result};
use crate::explain;
use crate::names::{DEFAULT_HOOK, DEFAULT_STATE_DIR};
use crate::state;
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
    // One list, verb first: argh allows no optional positional before another, and with
    // --version there is no verb.
    #[argh(positional, arg_name = "verb")]
    pub words: Vec<String>,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    /// explain: print one JSON object (the form a web page reads)
    #[argh(switch)]
    pub json: bool,
    /// explain: the source's hardware address (default: the router's neighbour entry)
    #[argh(option)]
    pub mac: Option<String>,
    /// explain: the device the connection comes in on (default: the neighbour entry's)
    #[argh(option)]
    pub dev: Option<String>,
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
    /// The verb and the words after it (explain's operands).
    fn verb(&self) -> Result<(Verb, &[String])> {
        let (verb, operands) = self.words.split_first().ok_or_else(|| {
            Error::Usage("no verb: expected apply, check, stop, run, status or explain".into())
        })?;
        Ok((verb.parse().map_err(Error::Usage)?, operands))
    }

    /// The context the options describe.
    pub fn context(&self) -> Context {
        Context {
            config_json: self.config.clone(),
            config_uci: self.uci.clone(),
            ubus_socket: self.ubus_socket.clone(),
            state_dir: self.state_dir.clone(),
            hook: self.hook.clone(),
        }
    }
}

/// Runs one verb.
pub fn run(args: &Args) -> Result<()> {
    if args.version {
        println!("connmark-lb {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let (verb, operands) = args.verb()?;
    let explain_only = args.json || args.mac.is_some() || args.dev.is_some();
    if verb != Verb::Explain && (!operands.is_empty() || explain_only) {
        return Err(Error::Usage(
            "only explain takes addresses, --json, --mac and --dev".into(),
        ));
    }
    let context = args.context();
    match verb {
        Verb::Explain => explain(args, operands, &context),
        Verb::Check => {
            print!("{}", context.check()?);
            Ok(())
        }
        Verb::Apply => context.apply(),
        Verb::Stop => context.stop().context("stop"),
        Verb::Run => match daemon::run(&context)? {
            daemon::Exit::Signal(_) => Ok(()),
            daemon::Exit::Disabled(config) => context.remove_disabled(&config),
        },
        Verb::Status => {
            let status = state::daemon_status(&context.state_dir)?;
            let text = serde_json::to_string_pretty(&status)
                .map_err(|e| Error::State(format!("encoding the status: {e}")))?;
            println!("{text}");
            Ok(())
        }
    }
}

/// `explain`: [`Context::explain`], printed as text or as one JSON object.
fn explain(args: &Args, operands: &[String], context: &Context) -> Result<()> {
    let query = explain::Query::with_origin(operands, args.mac.as_deref(), args.dev.as_deref())?;
    let (answer, plan, query) = context.explain(&query)?;
    if args.json {
        println!("{}", answer.to_json(&plan, &query));
    } else {
        print!("{}", answer.to_text(&plan, &query));
    }
    Ok(())
}
