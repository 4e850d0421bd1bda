//! Schema validation errors: every issue, each naming its table and field.

use std::fmt;

/// One problem found in a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaIssue {
    /// The table (or `enum X`, `custom type X`, `relation X`) concerned.
    pub table: Option<String>,
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for SchemaIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.table, &self.field) {
            (Some(t), Some(fl)) => write!(f, "{t}.{fl}: {}", self.reason),
            (Some(t), None) => write!(f, "{t}: {}", self.reason),
            _ => f.write_str(&self.reason),
        }
    }
}

/// A schema failed to parse or validate. Holds every issue found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SchemaError {
    pub issues: Vec<SchemaIssue>,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid schema ({} problem", self.issues.len())?;
        if self.issues.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str("):")?;
        for i in &self.issues {
            write!(f, "\n  - {i}")?;
        }
        Ok(())
    }
}
