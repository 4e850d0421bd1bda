//! One module per subcommand.

pub mod backup;
pub mod checkpoint;
pub mod common;
pub mod dump_schema;
pub mod fsck;
pub mod init;
pub mod inspect;
pub mod migrate;
pub mod promote;
pub mod rebuild;
pub mod replication;
pub mod restore;
pub mod transfer;
pub mod verify;
