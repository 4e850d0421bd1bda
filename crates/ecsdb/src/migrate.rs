//! Applying a schema migration to a live database.
//!
//! Why the migration is computed before anything is logged: the rewritten
//! state is built beside the current one under the writer lock (readers
//! keep reading), so a migration that fails for any reason — malformed,
//! out of order, an invalid resulting schema, data that does not fit —
//! changes nothing. Only then is it logged as one change set holding its
//! TOML, made durable, the log continued in a segment written against the
//! new schema, the state swapped in, `schema.toml` rewritten and a
//! checkpoint taken (so recovery starts after it). A crash after the record
//! is durable replays the migration from the log; before, it never happened.

use ecsdb_core::changeset::Op;
use ecsdb_core::migration::{Migration, MigrationReport};
use ecsdb_core::{ChangeSet, World};
use serde::Serialize;

use crate::database::{Database, write_schema_file};
use crate::error::{DbError, Result};

/// What a migration did (or, on a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct MigrationOutcome {
    /// Whether the state was changed (false for a dry run).
    pub applied: bool,
    /// The commit that holds the migration (applied migrations only).
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub report: MigrationReport,
}

impl Database {
    /// Check `text` (a migration TOML) against the current schema and say
    /// what applying it would do, changing nothing.
    pub fn plan_migration(&self, text: &str) -> Result<MigrationOutcome> {
        let m = Migration::parse(text)?;
        let w = self.read();
        let plan = w.schema().plan_migration(&m, false)?;
        Ok(MigrationOutcome { applied: false, seq: None, report: w.check_migration(&plan)? })
    }

    /// Apply a migration (see the module docs); `dry_run` only plans it.
    pub fn migrate(&self, text: &str, dry_run: bool) -> Result<MigrationOutcome> {
        self.migrate_with(text, dry_run, false)
    }

    /// As [`Database::migrate`]; `allow_system` lets the operations touch
    /// system (`_`) tables (the server's own upgrades).
    pub fn migrate_with(&self, text: &str, dry_run: bool, allow_system: bool) -> Result<MigrationOutcome> {
        if dry_run {
            let m = Migration::parse(text)?;
            let w = self.read();
            let plan = w.schema().plan_migration(&m, allow_system)?;
            return Ok(MigrationOutcome { applied: false, seq: None, report: w.check_migration(&plan)? });
        }
        self.migrate_inner(text, allow_system, true)
    }

    /// Apply a migration; `local` = a migration of this node (refused when
    /// read-only, waits for replicas) rather than one replicated from the
    /// primary.
    pub(crate) fn migrate_inner(&self, text: &str, allow_system: bool, local: bool) -> Result<MigrationOutcome> {
        let m = Migration::parse(text)?;
        if local {
            self.check_writable()?;
        } else if let Some(reason) = self.fail_stopped() {
            return Err(DbError::FailStop(reason));
        }
        let inner = self.inner();
        let writer = inner.writer.lock();
        let (plan, report, next, seq) = {
            let w = inner.world.read();
            let plan = w.schema().plan_migration(&m, allow_system)?;
            let report = w.migration_report(&plan);
            let next: World = w.migrated(&plan)?;
            (plan, report, next, w.seq() + 1)
        };
        let mut cs = ChangeSet::new();
        cs.push(Op::Migrate { text: text.as_bytes() });
        self.offer_to_sinks(seq, &cs, "migration")?;
        let sinks = &inner.sinks;
        for sink in sinks {
            if let Err(e) = sink.wait_durable(seq) {
                let reason = format!("migration {seq} may not be durable: {e}");
                self.enter_fail_stop(reason.clone());
                return Err(DbError::FailStop(reason));
            }
        }
        if let Some(d) = &inner.durability
            && let Err(e) = d.store.wal().rotate_schema(plan.schema.fingerprint)
        {
            let reason = format!("migration {seq} is logged but the log could not continue under the new schema: {e}");
            self.enter_fail_stop(reason.clone());
            return Err(DbError::FailStop(reason));
        }
        {
            // Published under the write lock, like every commit: whoever
            // reads the new sequence knows listeners already have it.
            let mut w = inner.world.write();
            w.install_migrated(next, seq);
            inner.feed.publish(seq, &cs);
        }
        *inner.schema.write() = plan.schema.clone();
        drop(writer);
        tracing::info!(
            seq,
            from = %report.from_version,
            to = %report.to_version,
            "schema migrated"
        );
        // The snapshot first, then schema.toml: a crash between them leaves
        // a newer state than schema.toml says, which recovery corrects (the
        // snapshot carries its schema), never the reverse. Without the log
        // the snapshot is what makes the migration durable: no snapshot,
        // no new schema.toml.
        if let Some(d) = &inner.durability {
            let logged = inner.config.transactions.wal_enabled;
            match self.checkpoint() {
                Ok(_) => {}
                Err(e) if logged => {
                    tracing::warn!(error = %e, "checkpoint after the migration failed (recovery replays it from the log)");
                }
                Err(e) => {
                    tracing::error!(error = %e, "checkpoint after the migration failed; with the commit log disabled the migration is not durable");
                    return Ok(MigrationOutcome { applied: true, seq: Some(seq), report });
                }
            }
            if let Err(e) = write_schema_file(d.store.fs().as_ref(), d.store.dir(), &plan.schema) {
                tracing::warn!(error = %e, "migration applied; schema.toml could not be rewritten yet (the next open does it)");
            }
        }
        if local {
            for sink in &inner.sinks {
                if let Err(reason) = sink.wait_replicated(seq) {
                    return Err(DbError::NotReplicated { seq, reason });
                }
            }
        }
        Ok(MigrationOutcome { applied: true, seq: Some(seq), report })
    }
}
