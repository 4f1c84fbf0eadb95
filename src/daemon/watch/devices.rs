//! Which devices are operational, and a wake-up whenever that may have changed.
//!
//! The kernel announces every link change on the rtnetlink `RTMGRP_LINK` group; the daemon
//! polls that socket with its probe sockets, and on any announcement reads the flags of all
//! devices again (one `getifaddrs`) instead of decoding the messages: changes are rare and the
//! answer is then always whole.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, socket,
};

use crate::error::{Error, Result};

/// `RTMGRP_LINK` from `<linux/rtnetlink.h>`: link added, removed or changed.
const RTMGRP_LINK: u32 = 1;
const SOCKET_NAME: &str = "rtnetlink link monitor";

/// A nonblocking socket that becomes readable when any device changes.
#[derive(Debug)]
pub struct DeviceMonitor {
    socket: OwnedFd,
}

impl DeviceMonitor {
    /// Subscribes to link notifications of the current network namespace.
    pub fn open() -> Result<DeviceMonitor> {
        let io = |step: &str, e: Errno| Error::io(format!("{SOCKET_NAME}: {step}"), e.into());
        let socket = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|e| io("socket", e))?;
        bind(socket.as_raw_fd(), &NetlinkAddr::new(0, RTMGRP_LINK)).map_err(|e| io("bind", e))?;
        Ok(DeviceMonitor { socket })
    }

    /// Takes every queued notification; true when there was any (or the queue overflowed, so
    /// some were lost): device states must then be read again.
    pub fn drain(&self) -> Result<bool> {
        let mut buffer = [0u8; 8192];
        let mut any = false;
        loop {
            match recv(self.socket.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
                Ok(_) | Err(Errno::ENOBUFS) => any = true,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(any),
                Err(e) => return Err(Error::io(format!("{SOCKET_NAME}: receive"), e.into())),
            }
        }
    }
}

impl AsFd for DeviceMonitor {
    /// The socket to poll for readability.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Names of the devices that are up and operational (`IFF_UP` and `IFF_RUNNING`: carrier
/// present, or a point-to-point session established), in the current network namespace.
pub fn running_devices() -> Result<Vec<String>> {
    let wanted = InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING;
    let mut names: Vec<String> = getifaddrs()
        .map_err(|e| Error::io("getifaddrs", e.into()))?
        .filter(|entry| entry.flags.contains(wanted))
        .map(|entry| entry.interface_name)
        .collect();
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::testns::{Netns, veth};
    use std::time::{Duration, Instant};

    /// Waits (bounded) for the monitor to report a change.
    fn changed(monitor: &DeviceMonitor) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if monitor.drain().unwrap() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    #[cfg_attr(
        qemu_user,
        ignore = "musl getifaddrs spins on qemu-user's rtnetlink dump translation"
    )]
    fn sees_devices_go_down_and_up() {
        let a = Netns::new("dev");
        let b = Netns::new("dev");
        veth(&a, "w1", &b, "w1");
        let monitor = a.enter(DeviceMonitor::open).unwrap();
        assert!(!monitor.drain().unwrap(), "nothing happened yet");
        assert_eq!(a.enter(running_devices).unwrap(), ["lo", "w1"]);

        b.ip(&["link", "set", "w1", "down"]);
        assert!(changed(&monitor), "carrier loss is announced");
        assert_eq!(a.enter(running_devices).unwrap(), ["lo"]);

        b.ip(&["link", "set", "w1", "up"]);
        assert!(changed(&monitor));
        assert_eq!(a.enter(running_devices).unwrap(), ["lo", "w1"]);

        a.ip(&["link", "del", "w1"]);
        assert!(changed(&monitor));
        assert_eq!(a.enter(running_devices).unwrap(), ["lo"]);
    }
}
