//! Configuration: raw UCI sections in, validated typed config out.
//!
//! Everything the user can get wrong is caught here, before any rule is rendered, so a bad
//! config exits 2 and changes nothing. The layer owns the way in (`raw` from uci-get JSON or
//! `uci_text` from `/etc/config`), the typed result (`model`, with `family`, `track` and
//! `classes` for the larger parts), and the reading between them: `sections` walks the
//! section types, `options` and `value` parse single options, `checks` compares sections.

mod checks;
pub mod classes;
pub mod failback;
pub mod family;
#[cfg(test)]
mod fixtures;
pub mod matches;
mod model;
mod options;
pub mod raw;
mod sections;
pub mod standby;
pub mod track;
mod tunnel;
pub mod uci_text;
pub mod value;

pub use classes::{AddrSet, HashKey, Sticky};
pub use failback::Failback;
pub use family::{Cidr, Family};
pub use matches::{Days, Mac, Schedule};
pub use model::{
    BackendChoice, Balance, Config, DEFAULT_MARK_MASK, DEFAULT_PRIORITY_BASE, DEFAULT_TABLE_BASE,
    FlushEvent, Globals, Interface, LastResort, MAX_LINKS, Member, PRIORITY_SPAN, Policy,
    PortRange, Proto, Rule, RuleTarget,
};
pub use standby::Standby;
pub use tunnel::Tunnel;
