//! Import and export of the whole state: JSON (lossless, the shape of the
//! deployment guide: `schema`, `version`, `entities`, `components`, plus
//! `relations`) and CSV (one table at a time, for spreadsheets and tools).

mod csv_export;
mod json;

pub use csv_export::export_table_csv;
pub use json::{EXPORT_FORMAT, EXPORT_FORMAT_VERSION, export_json, export_table_json, import_json};
