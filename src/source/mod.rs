//! Where configuration and link state come from when they are not given as files: the
//! router's own services.

pub mod ubus;
