//! The service loop itself: start, the poll set, signals, reloads, rule updates after a state
//! change, the ubus object, the status file, the user's hook, and the log text.

pub mod bus;
pub mod hook;
mod messages;
mod pollset;
mod rules;
mod run;
mod signals;
pub mod status;

pub use run::{Exit, run};
