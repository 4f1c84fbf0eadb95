//! What decides: the health state machine of each link, the tracked link that feeds it probe
//! rounds and device changes, and re-steering (which conntrack entries go after a change).

pub mod budget;
pub mod health;
pub mod link;
pub mod resteer;
pub mod standby;
