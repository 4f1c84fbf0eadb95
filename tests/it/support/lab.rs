//! The two labs end-to-end tests run in. A [`Lab`] is a topology for one config with the
//! server's TCP and UDP services and the config written; [`Lab::applied`] has run
//! `connmark-lb apply` on it. A [`DaemonLab`] is the same lab with `connmark-lb run` on the
//! router instead. It builds on `Lab` rather than merging with it because the daemon is a
//! process the lab owns and must stop first, and most tests have no daemon at all.

use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use super::checks::servers;
use super::daemon::Daemon;
use super::lbconfig::{ConfigFile, LbConfig};
use super::topology::Topology;
use super::traffic::Server;

/// A topology with the server's services and `config` written as `lb`. Field order matters:
/// the servers stop before the namespaces go.
pub struct Lab {
    _servers: Vec<Server>,
    pub config: ConfigFile,
    pub topo: Topology,
}

impl Lab {
    /// The lab with nothing of ours run on the router yet.
    fn prepared(config: &LbConfig) -> Lab {
        let topo = Topology::for_config(config);
        let servers = servers(&topo);
        let config = topo.write_config("lb", config);
        Lab {
            _servers: servers,
            config,
            topo,
        }
    }

    /// The lab with `connmark-lb apply` of the config done.
    pub fn applied(config: &LbConfig) -> Lab {
        let lab = Lab::prepared(config);
        lab.topo.apply(&lab.config);
        lab
    }
}

/// A [`Lab`] whose router runs the daemon on the config, with an event script that logs
/// each call. Field order matters: the daemon stops first, then the lab. It derefs to its
/// lab, so a test reads `lab.topo` in either kind.
pub struct DaemonLab {
    pub daemon: Daemon,
    /// Lines `ACTION INTERFACE DEVICE $1 $2` written by the hook script.
    hook_log: PathBuf,
    lab: Lab,
}

impl DaemonLab {
    /// Starts the daemon and waits until every link is up.
    pub fn start(config: &LbConfig) -> DaemonLab {
        DaemonLab::start_with(config, |_| ())
    }

    /// The same, with `prepare` run on the topology first (a tunnel the config names, say).
    pub fn start_with(config: &LbConfig, prepare: impl FnOnce(&Topology)) -> DaemonLab {
        let lab = Lab::prepared(config);
        let topo = &lab.topo;
        prepare(topo);
        let hook_log = topo.dir.path().join("hook.log");
        let hook = topo.dir.write(
            "connmark-lb.user",
            &format!(
                "echo \"$ACTION $INTERFACE $DEVICE $1 $2\" >> {}\n",
                hook_log.display()
            ),
        );
        let config = &lab.config;
        let command = topo.lb_command(&[
            "run".as_ref(),
            config.flag().as_ref(),
            config.path_str().as_ref(),
            "--hook".as_ref(),
            hook.as_os_str(),
        ]);
        let daemon = Daemon::start(topo, command, topo.dir.path().join("daemon.log"));
        daemon.wait_all("up", Duration::from_secs(10));
        DaemonLab {
            daemon,
            hook_log,
            lab,
        }
    }

    pub fn hook_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.hook_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Deref for DaemonLab {
    type Target = Lab;

    fn deref(&self) -> &Lab {
        &self.lab
    }
}
