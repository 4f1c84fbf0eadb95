//! Traffic generators and responders that run on threads inside the test namespaces.
//!
//! A network namespace belongs to a thread, so every tool spawns a fresh thread, moves it into
//! the namespace with `setns` and creates its sockets there. Servers report the peer address
//! they see, which tells which link (SNAT address) a flow used. Every loop is bounded in count
//! and time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, setsockopt, socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

use super::netns::Netns;

/// How long a client waits for a TCP handshake; long enough for two SYN retransmissions (at
/// 1 s and, with the linear SYN timeouts of kernels since 6.7, at 2 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(2500);
/// How long a client waits for an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a server-side connection may stay idle before the server gives up on it.
const SERVER_IDLE: Duration = Duration::from_secs(10);
/// Upper bound on any batch of client traffic.
pub const BATCH_DEADLINE: Duration = Duration::from_secs(120);

/// Moves the calling thread into namespace `ns`; only for freshly spawned threads.
fn enter(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns only changes this thread's network namespace; the fd is valid for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Runs `work` on a new thread inside namespace `ns`.
pub fn spawn_in<T, F>(ns: &Netns, work: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let name = ns.name().to_string();
    std::thread::Builder::new()
        .name(format!("in-{name}"))
        .spawn(move || {
            enter(&name);
            work()
        })
        .expect("spawn thread")
}

/// Which address the server saw for each successful flow, and what failed.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub seen: BTreeMap<IpAddr, u64>,
    pub failures: u64,
    /// The first few failure messages, for the assertion text.
    pub errors: Vec<String>,
}

impl Tally {
    fn record(&mut self, result: Result<IpAddr, String>) {
        match result {
            Ok(addr) => *self.seen.entry(addr).or_default() += 1,
            Err(error) => {
                self.failures += 1;
                if self.errors.len() < 5 {
                    self.errors.push(error);
                }
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        for (addr, count) in other.seen {
            *self.seen.entry(addr).or_default() += count;
        }
        self.failures += other.failures;
        for error in other.errors {
            if self.errors.len() < 5 {
                self.errors.push(error);
            }
        }
    }

    /// Successful flows.
    pub fn succeeded(&self) -> u64 {
        self.seen.values().sum()
    }

    /// Successful flows whose server saw `addr`.
    pub fn count(&self, addr: impl Into<IpAddr>) -> u64 {
        self.seen.get(&addr.into()).copied().unwrap_or(0)
    }
}

/// Binds, retrying for up to 3 s while the address is not yet usable: an IPv6 address the
/// topology just added can still be settling when a server starts.
fn bind_when_usable<T>(bind: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match bind() {
            Err(e) if e.kind() == ErrorKind::AddrNotAvailable && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

/// A responder running in a namespace until dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// A TCP server on `addr` in `ns`: to every connection it first sends the peer's address
    /// as a line, then answers every line it receives with `<peer address> <line>`.
    pub fn tcp(ns: &Netns, addr: impl Into<SocketAddr>) -> Server {
        let addr = addr.into();
        Server::start(ns, move |stop, ready| {
            let listener = match bind_when_usable(|| TcpListener::bind(addr)).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            }) {
                Ok(listener) => listener,
                Err(e) => {
                    let _ = ready.send(Err(format!("bind tcp {addr}: {e}")));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            let mut connections: Vec<JoinHandle<()>> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if !wait_readable(listener.as_fd()) {
                    continue;
                }
                match listener.accept() {
                    Ok((stream, peer)) => {
                        connections.retain(|c| !c.is_finished());
                        connections.push(std::thread::spawn(move || serve_tcp(stream, peer)));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => eprintln!("tcp server {addr}: accept: {e}"),
                }
            }
            for connection in connections {
                let _ = connection.join();
            }
        })
    }

    /// A UDP responder on `addr` in `ns`: answers every datagram with the peer's address.
    pub fn udp(ns: &Netns, addr: impl Into<SocketAddr>) -> Server {
        let addr = addr.into();
        Server::start(ns, move |stop, ready| {
            let socket = match bind_when_usable(|| UdpSocket::bind(addr)) {
                Ok(socket) => socket,
                Err(e) => {
                    let _ = ready.send(Err(format!("bind udp {addr}: {e}")));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            let mut buffer = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                if !wait_readable(socket.as_fd()) {
                    continue;
                }
                match socket.recv_from(&mut buffer) {
                    Ok((_, peer)) => {
                        if let Err(e) = socket.send_to(peer.ip().to_string().as_bytes(), peer) {
                            eprintln!("udp responder {addr}: reply to {peer}: {e}");
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => eprintln!("udp responder {addr}: {e}"),
                }
            }
        })
    }

    fn start<F>(ns: &Netns, serve: F) -> Server
    where
        F: FnOnce(Arc<AtomicBool>, mpsc::Sender<Result<(), String>>) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = spawn_in(ns, {
            let stop = stop.clone();
            move || serve(stop, ready_tx)
        });
        let server = Server {
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => server,
            Ok(Err(message)) => panic!("server did not start: {message}"),
            Err(e) => panic!("server did not report readiness: {e}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits up to 50 ms for `fd` to become readable, so server loops notice their stop flag.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(50u8)), Ok(n) if n > 0)
}

fn serve_tcp(stream: TcpStream, peer: SocketAddr) {
    let peer = peer.ip();
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_read_timeout(Some(SERVER_IDLE)))
        .and_then(|()| stream.set_write_timeout(Some(SERVER_IDLE)))
        .and_then(|()| send_line(&stream, &peer.to_string()));
    if setup.is_err() {
        return;
    }
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if send_line(&stream, &format!("{peer} {}", line.trim_end())).is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes `line` and a newline in one write, so each message is one segment.
fn send_line(stream: &TcpStream, line: &str) -> std::io::Result<()> {
    let mut stream = stream;
    stream.write_all(format!("{line}\n").as_bytes())
}

/// A TCP connection to `target`, from `source` when given (else the kernel's choice), given
/// up after `timeout`.
pub fn connect_from(
    source: Option<IpAddr>,
    target: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(&target, timeout);
    };
    let family = match source {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(source, 0)),
    )?;
    // A blocking connect gives up after the send timeout.
    let limit = time_val(timeout);
    setsockopt(&fd, sockopt::SendTimeout, &limit)?;
    connect(fd.as_raw_fd(), &SockaddrStorage::from(target))?;
    setsockopt(&fd, sockopt::SendTimeout, &TimeVal::new(0, 0))?;
    Ok(TcpStream::from(fd))
}

/// `duration` as a socket timeout; `TimeValLike` converts to this target's `time_t` (32 bits
/// on 32-bit musl targets).
fn time_val(duration: Duration) -> TimeVal {
    TimeVal::microseconds(i64::try_from(duration.as_micros()).expect("timeout fits in i64"))
}

/// One short connection: connect, read the address line the server sends, close first.
pub fn short_connection(source: Option<IpAddr>, target: SocketAddr) -> Result<IpAddr, String> {
    let stream = connect_from(source, target, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect {target}: {e}"))?;
    read_peer_line(&stream, target)
}

/// The address line a server sends first.
fn read_peer_line(stream: &TcpStream, target: SocketAddr) -> Result<IpAddr, String> {
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| format!("set timeout: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("read from {target}: {e}"))?;
    line.trim()
        .parse()
        .map_err(|e| format!("bad answer {line:?} from {target}: {e}"))
}

/// How a client socket is bound before it connects, as a service pinned to a link would.
#[derive(Debug, Clone)]
pub enum Bound {
    /// To a local address (`bind`).
    Address(IpAddr),
    /// To a device (`SO_BINDTODEVICE`).
    Device(String),
}

/// One short connection from a bound socket: the address the server saw.
pub fn short_connection_bound(bound: &Bound, target: SocketAddr) -> Result<IpAddr, String> {
    let device = match bound {
        Bound::Address(source) => return short_connection(Some(*source), target),
        Bound::Device(device) => device,
    };
    let family = match target {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| format!("socket: {e}"))?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(device),
    )
    .map_err(|e| format!("bind to {device}: {e}"))?;
    // A blocking connect gives up after the send timeout.
    let limit = time_val(CONNECT_TIMEOUT);
    setsockopt(&fd, sockopt::SendTimeout, &limit).map_err(|e| format!("timeout: {e}"))?;
    connect(fd.as_raw_fd(), &SockaddrStorage::from(target))
        .map_err(|e| format!("connect {bound:?} -> {target}: {e}"))?;
    read_peer_line(&TcpStream::from(fd), target)
}

/// One connection from each bound socket in turn, from namespace `ns`: what the server saw
/// for each.
pub fn tcp_bound_each(
    ns: &Netns,
    sockets: &[Bound],
    target: impl Into<SocketAddr>,
) -> Vec<Result<IpAddr, String>> {
    let (sockets, target) = (sockets.to_vec(), target.into());
    spawn_in(ns, move || {
        sockets
            .iter()
            .map(|bound| short_connection_bound(bound, target))
            .collect()
    })
    .join()
    .expect("tcp client thread panicked")
}

/// One connection from each of `sources` (local addresses) in turn, from namespace `ns`.
pub fn tcp_from_each(
    ns: &Netns,
    sources: &[Ipv4Addr],
    target: impl Into<SocketAddr>,
) -> Vec<Result<IpAddr, String>> {
    let sockets: Vec<Bound> = sources.iter().map(|&a| Bound::Address(a.into())).collect();
    tcp_bound_each(ns, &sockets, target)
}

/// Short TCP connections from a namespace on a few worker threads, running in the background
/// until `limit` connections were made, [`TcpLoad::stop`] is called, or the batch deadline
/// passes.
pub struct TcpLoad {
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicUsize>,
    workers: Vec<JoinHandle<Tally>>,
}

impl TcpLoad {
    pub fn start(
        ns: &Netns,
        target: impl Into<SocketAddr>,
        workers: usize,
        limit: usize,
    ) -> TcpLoad {
        TcpLoad::start_from(ns, None, target.into(), workers, limit)
    }

    /// The same from the source address `source` (else the kernel's choice).
    pub fn start_from(
        ns: &Netns,
        source: Option<IpAddr>,
        target: SocketAddr,
        workers: usize,
        limit: usize,
    ) -> TcpLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let claimed = Arc::new(AtomicUsize::new(0));
        let completed = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + BATCH_DEADLINE;
        let workers = (0..workers)
            .map(|_| {
                let (stop, claimed, completed) = (stop.clone(), claimed.clone(), completed.clone());
                spawn_in(ns, move || {
                    let mut tally = Tally::default();
                    while !stop.load(Ordering::Relaxed)
                        && claimed.fetch_add(1, Ordering::Relaxed) < limit
                    {
                        if Instant::now() > deadline {
                            tally.record(Err("batch deadline passed".to_string()));
                            break;
                        }
                        tally.record(short_connection(source, target));
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    tally
                })
            })
            .collect();
        TcpLoad {
            stop,
            completed,
            workers,
        }
    }

    /// Connections finished so far (successful or not).
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::Relaxed)
    }

    /// Waits for the limit (or the deadline) and returns the tally.
    pub fn wait(self) -> Tally {
        let mut tally = Tally::default();
        for worker in self.workers {
            tally.merge(worker.join().expect("tcp client thread panicked"));
        }
        tally
    }

    /// Ends the load after the connections in flight and returns the tally.
    pub fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.wait()
    }
}

/// `count` short TCP connections from `ns` to `target` over 4 parallel workers.
pub fn tcp_connections(ns: &Netns, target: impl Into<SocketAddr>, count: usize) -> Tally {
    TcpLoad::start(ns, target, 4, count).wait()
}

/// The same from the source address `source`.
pub fn tcp_connections_from(
    ns: &Netns,
    source: impl Into<IpAddr>,
    target: impl Into<SocketAddr>,
    count: usize,
) -> Tally {
    TcpLoad::start_from(ns, Some(source.into()), target.into(), 4, count).wait()
}

/// `count` short TCP connections all started at once (one thread each), for tests where each
/// connection waits on a retransmission.
pub fn tcp_connections_parallel(ns: &Netns, target: impl Into<SocketAddr>, count: usize) -> Tally {
    TcpLoad::start(ns, target, count, count).wait()
}

/// What the server answered over one long connection.
#[derive(Debug, Clone)]
pub struct StreamReport {
    /// Messages answered.
    pub answered: usize,
    /// Every source address the server reported during the stream.
    pub peers: BTreeMap<Ipv4Addr, usize>,
}

/// Sends `messages` lines over one TCP connection, each answered by the server with the peer
/// address it sees; fails on the first lost or wrong answer.
pub fn tcp_stream(
    ns: &Netns,
    target: SocketAddrV4,
    messages: usize,
) -> Result<StreamReport, String> {
    spawn_in(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = TcpStream::connect_timeout(&target.into(), CONNECT_TIMEOUT)
            .map_err(|e| format!("connect {target}: {e}"))?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| format!("socket options: {e}"))?;
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("greeting: {e}"))?;
        let mut report = StreamReport {
            answered: 0,
            peers: BTreeMap::new(),
        };
        for i in 0..messages {
            if Instant::now() > deadline {
                return Err(format!("deadline passed after {i} messages"));
            }
            send_line(&stream, &format!("message {i}")).map_err(|e| format!("send {i}: {e}"))?;
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("answer {i}: {e}"))?;
            let (peer, echoed) = line
                .trim_end()
                .split_once(' ')
                .ok_or_else(|| format!("bad answer {line:?}"))?;
            if echoed != format!("message {i}") {
                return Err(format!("answer {i} was {line:?}"));
            }
            let peer: Ipv4Addr = peer
                .parse()
                .map_err(|e| format!("bad address {peer:?}: {e}"))?;
            *report.peers.entry(peer).or_default() += 1;
            report.answered += 1;
        }
        Ok(report)
    })
    .join()
    .expect("stream client thread panicked")
}

/// `count` UDP flows from `ns`, each from its own source port `first_port + i`, one datagram
/// and one answer each.
pub fn udp_flows(ns: &Netns, target: impl Into<SocketAddr>, count: u16, first_port: u16) -> Tally {
    udp_flows_from(ns, None, target.into(), count, first_port)
}

/// The same from the source address `source` (else the kernel's choice).
pub fn udp_flows_from(
    ns: &Netns,
    source: Option<IpAddr>,
    target: SocketAddr,
    count: u16,
    first_port: u16,
) -> Tally {
    spawn_in(ns, move || {
        let deadline = Instant::now() + BATCH_DEADLINE;
        let mut tally = Tally::default();
        for i in 0..count {
            if Instant::now() > deadline {
                tally.record(Err("batch deadline passed".to_string()));
                break;
            }
            tally.record(udp_flow(source, target, first_port + i));
        }
        tally
    })
    .join()
    .expect("udp client thread panicked")
}

fn udp_flow(source: Option<IpAddr>, target: SocketAddr, port: u16) -> Result<IpAddr, String> {
    let any: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(source.unwrap_or(any), port))
        .map_err(|e| format!("bind port {port}: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| format!("set timeout: {e}"))?;
    socket
        .send_to(b"which address?", target)
        .map_err(|e| format!("send from port {port}: {e}"))?;
    let mut buffer = [0u8; 64];
    let (length, _) = socket
        .recv_from(&mut buffer)
        .map_err(|e| format!("answer to port {port}: {e}"))?;
    let text = String::from_utf8_lossy(&buffer[..length]);
    text.parse()
        .map_err(|e| format!("bad answer {text:?} to port {port}: {e}"))
}
