//! Subcommands of the `zipserv` tool that need more than a few lines.

pub mod bench;
