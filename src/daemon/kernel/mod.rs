//! What talks to the kernel: netlink sockets and messages, nf_tables queries, conntrack dumps
//! and deletes, and the traffic counters read for the ubus `status` answer. Nothing here
//! decides anything.

pub mod conntrack;
pub mod counters;
pub mod netlink;
pub mod nftables;
