//! Command-line entry point; everything lives in the library.

fn main() {}
