//! Field types: the closed set of value shapes a component field can hold.
//!
//! Why a closed set: every fixed-size type has one canonical little-endian byte
//! layout, which is at once the in-memory column layout, the change-set wire
//! format and the snapshot format. Variable-length `string`/`bytes` are the only
//! exceptions and are stored out of line.

use std::fmt;

/// Maximum element count of an array or fixed string (`[T; N]`).
pub const MAX_ARRAY_LEN: usize = 65_536;

/// Fixed-width scalar kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
    Bool,
}

impl Scalar {
    /// Byte width of the scalar in its canonical layout.
    pub fn size(self) -> usize {
        match self {
            Scalar::U8 | Scalar::I8 | Scalar::Bool => 1,
            Scalar::U16 | Scalar::I16 => 2,
            Scalar::U32 | Scalar::I32 | Scalar::F32 => 4,
            Scalar::U64 | Scalar::I64 | Scalar::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scalar::U8 => "u8",
            Scalar::U16 => "u16",
            Scalar::U32 => "u32",
            Scalar::U64 => "u64",
            Scalar::I8 => "i8",
            Scalar::I16 => "i16",
            Scalar::I32 => "i32",
            Scalar::I64 => "i64",
            Scalar::F32 => "f32",
            Scalar::F64 => "f64",
            Scalar::Bool => "bool",
        }
    }

    pub fn from_name(s: &str) -> Option<Scalar> {
        Some(match s {
            "u8" => Scalar::U8,
            "u16" => Scalar::U16,
            "u32" => Scalar::U32,
            "u64" => Scalar::U64,
            "i8" => Scalar::I8,
            "i16" => Scalar::I16,
            "i32" => Scalar::I32,
            "i64" => Scalar::I64,
            "f32" => Scalar::F32,
            "f64" => Scalar::F64,
            "bool" => Scalar::Bool,
            _ => return None,
        })
    }

    pub fn is_integer(self) -> bool {
        !matches!(self, Scalar::F32 | Scalar::F64 | Scalar::Bool)
    }
}

/// A resolved field type. Enum and custom types are referenced by index into
/// the schema's `enums` / `custom_types` lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldType {
    Scalar(Scalar),
    /// `[T; N]` for any fixed-size `T` other than `u8`.
    Array(Box<FieldType>, usize),
    /// `[u8; N]`: a fixed-size UTF-8 string, zero-padded. Holds at most N bytes.
    FixedString(usize),
    /// Index into `Schema::enums`; `width` is the stored byte width (1 or 2).
    Enum {
        id: usize,
        width: usize,
    },
    /// Index into `Schema::custom_types`.
    Custom(usize),
    /// Variable-length UTF-8 string, stored out of line.
    String,
    /// Variable-length bytes, stored out of line.
    Bytes,
}

impl FieldType {
    /// Whether the type has a fixed byte size (everything but `string`/`bytes`).
    pub fn is_fixed(&self) -> bool {
        !matches!(self, FieldType::String | FieldType::Bytes)
    }
}

/// An unresolved type expression as written in the schema file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeExpr {
    Named(String),
    Array(Box<TypeExpr>, usize),
}

impl fmt::Display for TypeExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeExpr::Named(n) => f.write_str(n),
            TypeExpr::Array(t, n) => write!(f, "[{t}; {n}]"),
        }
    }
}

/// Deepest nesting of arrays in one type expression, and of custom types
/// in one another: types are walked recursively, so depth is bounded.
pub const MAX_TYPE_DEPTH: usize = 8;

/// Parse a type expression: `u32`, `vec3`, `[f32; 3]`, `[[u8; 4]; 2]`.
pub fn parse_type_expr(s: &str) -> Result<TypeExpr, String> {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    for c in s.chars() {
        match c {
            '[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_TYPE_DEPTH {
        let shown: String = s.chars().take(40).collect();
        return Err(format!("type `{shown}…` nests arrays {deepest} deep; at most {MAX_TYPE_DEPTH} are allowed"));
    }
    parse_nested(s)
}

fn parse_nested(s: &str) -> Result<TypeExpr, String> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| format!("type `{s}`: array type must end with `]`"))?;
        // Split at the last top-level ';' so nested arrays parse.
        let mut depth = 0i32;
        let mut split = None;
        for (i, c) in inner.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                ';' if depth == 0 => split = Some(i),
                _ => {}
            }
        }
        let i = split.ok_or_else(|| format!("type `{s}`: array type must be `[T; N]`"))?;
        let elem = parse_nested(&inner[..i])?;
        let len_text = inner[i + 1..].trim();
        let len: usize =
            len_text.parse().map_err(|_| format!("type `{s}`: array length `{len_text}` is not a number"))?;
        if len == 0 {
            return Err(format!("type `{s}`: array length must be at least 1"));
        }
        if len > MAX_ARRAY_LEN {
            return Err(format!("type `{s}`: array length {len} is longer than the maximum of {MAX_ARRAY_LEN}"));
        }
        return Ok(TypeExpr::Array(Box::new(elem), len));
    }
    if s.is_empty() {
        return Err("type is empty".to_string());
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("type `{s}` is not a valid type name"));
    }
    Ok(TypeExpr::Named(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_arrays() {
        assert_eq!(
            parse_type_expr("[[u8; 4]; 2]").unwrap(),
            TypeExpr::Array(Box::new(TypeExpr::Array(Box::new(TypeExpr::Named("u8".into())), 4)), 2)
        );
        assert_eq!(parse_type_expr(" [f32;3] ").unwrap().to_string(), "[f32; 3]");
    }

    #[test]
    fn rejects_bad_arrays() {
        assert!(parse_type_expr("[f32; 0]").unwrap_err().contains("at least 1"));
        assert!(parse_type_expr("[f32; x]").unwrap_err().contains("not a number"));
        assert!(parse_type_expr("[f32; 3").unwrap_err().contains("end with"));
        assert!(parse_type_expr("[f32]").unwrap_err().contains("[T; N]"));
        assert!(parse_type_expr("[u8; 70000]").unwrap_err().contains("maximum"));
        assert!(parse_type_expr("a-b").unwrap_err().contains("not a valid"));
    }
}
