//! Configuration: raw UCI sections in, validated typed config out.

pub mod raw;
pub mod uci_text;
