//! The daemon's ubus object `connmark-lb`: `status` (what status.json holds, plus the backend
//! and live per-link counters), `reload` (what SIGHUP does), `check` (what `connmark-lb
//! check` would say of the config now) and `explain` (what `connmark-lb explain --json`
//! says of a new connection, for LuCI's Explain page), for LuCI and scripts.
//!
//! The connection lives in the daemon's poll loop and never blocks it (see
//! [`ObjectConnection`]). Without ubusd, or when ubusd restarts, the daemon connects and
//! registers again every [`RETRY`]; link tracking goes on meanwhile.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use serde_json::{Map, Value};

use crate::daemon::{log, log_error};
use crate::error::{Error, Result};
use crate::source::ubus::{self, Call, ObjectConnection, Status};

/// The object's name on ubus.
pub const OBJECT: &str = "connmark-lb";
const METHODS: [&str; 4] = ["status", "reload", "check", "explain"];
/// How long to wait before connecting again after ubusd went away or was not there.
const RETRY: Duration = Duration::from_secs(2);

/// The method a call names: what it asks the daemon for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Status,
    Reload,
    Check,
    /// Its arguments: `source`, `destination`, `protocol`, `port`.
    Explain,
}

/// The answer to `check`: `valid`, `errors` (one per problem), `warnings` and, when valid,
/// `output` (what `connmark-lb check` prints), from the config's warnings and that output or
/// the error reading it.
pub fn check_reply(outcome: Result<(Vec<String>, String)>) -> Map<String, Value> {
    let (errors, warnings, output) = match outcome {
        Ok((warnings, output)) => (Vec::new(), warnings, Some(output)),
        Err(Error::Many(errors)) => (
            errors.iter().map(ToString::to_string).collect(),
            Vec::new(),
            None,
        ),
        Err(e) => (vec![e.to_string()], Vec::new(), None),
    };
    let mut reply = Map::new();
    reply.insert("valid".into(), Value::Bool(errors.is_empty()));
    reply.insert("errors".into(), errors.into());
    reply.insert("warnings".into(), warnings.into());
    reply.insert("output".into(), output.into());
    reply
}

/// The object's connection, or when to try again.
pub struct Bus {
    /// `--ubus-socket`; without it the system's socket, looked up at every attempt (ubusd
    /// may not be up yet when the daemon starts).
    socket: Option<PathBuf>,
    connection: Option<ObjectConnection>,
    retry_at: Instant,
    /// The last attempt failed and said so: a missing ubusd is logged once, not every retry.
    failing: bool,
}

impl Bus {
    /// Connects at the loop's first turn.
    pub fn new(socket: Option<PathBuf>) -> Bus {
        Bus {
            socket,
            connection: None,
            retry_at: Instant::now(),
            failing: false,
        }
    }

    /// When the loop has to wake up for the next attempt to connect.
    pub fn deadline(&self) -> Option<Instant> {
        self.connection.is_none().then_some(self.retry_at)
    }

    /// The socket to poll, for reading, and for writing while replies wait.
    pub fn poll_fd(&self) -> Option<PollFd<'_>> {
        self.connection.as_ref().map(|c| {
            let mut events = PollFlags::POLLIN;
            if c.wants_write() {
                events |= PollFlags::POLLOUT;
            }
            PollFd::new(c.as_fd(), events)
        })
    }

    /// Connects when due; when the socket was ready, handles what arrived. Returns the calls
    /// to answer with [`Bus::answer`], with what each asks for (None: no such method).
    pub fn service(&mut self, now: Instant, ready: bool) -> Vec<(Call, Option<Method>)> {
        let Some(connection) = self.connection.as_mut() else {
            if now >= self.retry_at {
                self.connect(now);
            }
            return Vec::new();
        };
        if !ready {
            return Vec::new();
        }
        let was_registered = connection.registered();
        match connection.process() {
            Ok(calls) => {
                if !was_registered && connection.registered() {
                    log(&format!(
                        "ubus: object {OBJECT} registered on {}",
                        self.path().display()
                    ));
                    self.failing = false;
                }
                calls
                    .into_iter()
                    .map(|call| {
                        let method = match call.method.as_str() {
                            "status" => Some(Method::Status),
                            "reload" => Some(Method::Reload),
                            "check" => Some(Method::Check),
                            "explain" => Some(Method::Explain),
                            _ => None,
                        };
                        (call, method)
                    })
                    .collect()
            }
            Err(e) => {
                self.lost(&e.to_string(), now);
                Vec::new()
            }
        }
    }

    /// Sends the answer to `call`: `reply`, or METHOD_NOT_FOUND for a method we lack.
    pub fn answer(&mut self, call: &Call, reply: Option<&Map<String, Value>>) {
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        let sent = match reply {
            Some(data) => connection.reply(call, data),
            None => connection.fail(call, Status::METHOD_NOT_FOUND),
        };
        if let Err(e) = sent {
            self.lost(&e.to_string(), Instant::now());
        }
    }

    fn path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(ubus::default_socket)
    }

    fn connect(&mut self, now: Instant) {
        let path = self.path();
        match ObjectConnection::connect(&path, OBJECT, &METHODS) {
            Ok(connection) => self.connection = Some(connection),
            Err(e) => {
                if !self.failing {
                    log_error(&format!(
                        "ubus: cannot register {OBJECT} ({e}); trying again every {} s",
                        RETRY.as_secs()
                    ));
                }
                self.failing = true;
                self.retry_at = now + RETRY;
            }
        }
    }

    fn lost(&mut self, why: &str, now: Instant) {
        log_error(&format!(
            "ubus: connection lost ({why}); registering again in {} s",
            RETRY.as_secs()
        ));
        self.connection = None;
        self.failing = true;
        self.retry_at = now + RETRY;
    }
}
