//! Subcommands of the `flowfabric` binary.

pub mod bench;
