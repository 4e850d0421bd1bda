//! Dynamic values and their two external forms: the canonical fixed byte
//! layout (columns, change sets, snapshots) and JSON (API, import/export).
//!
//! JSON rules, chosen so every value round-trips exactly:
//! - integers are JSON numbers while |v| <= 2^53 - 1 and decimal strings beyond
//!   (JavaScript clients lose precision past 2^53); input accepts either form;
//! - floats are JSON numbers, with `"NaN"`, `"inf"`, `"-inf"` as strings; an
//!   `f32` is printed via `f64`, which parses back to the same `f32` bits;
//! - fixed strings (`[u8; N]`) are JSON strings of at most N UTF-8 bytes with
//!   no NUL character (the stored form is zero-padded);
//! - enums are the variant name; custom types are objects; arrays are arrays;
//! - `bytes` are lowercase hex strings.

use std::fmt::Write as _;

use crate::schema::{FieldType, Scalar, Schema};

/// Largest integer magnitude written as a JSON number.
pub const JSON_SAFE_INT: u64 = (1 << 53) - 1;

/// A dynamically typed field value.
#[derive(Debug, Clone)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    /// A fixed or variable string.
    Str(String),
    Bytes(Vec<u8>),
    /// An enum, by variant index.
    Enum(u16),
    Array(Vec<Value>),
    /// A custom type, fields in declaration order.
    Struct(Vec<Value>),
}

impl PartialEq for Value {
    /// Floats compare by bit pattern, so equality means "same stored bytes".
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::U64(a), Value::U64(b)) => a == b,
            (Value::I64(a), Value::I64(b)) => a == b,
            (Value::F32(a), Value::F32(b)) => a.to_bits() == b.to_bits(),
            (Value::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Enum(a), Value::Enum(b)) => a == b,
            (Value::Array(a), Value::Array(b)) | (Value::Struct(a), Value::Struct(b)) => a == b,
            _ => false,
        }
    }
}

/// Byte size of a fixed-size type; `None` for `string`/`bytes`.
pub fn fixed_size(ty: &FieldType, schema_custom_sizes: &dyn Fn(usize) -> usize) -> Option<usize> {
    Some(match ty {
        FieldType::Scalar(s) => s.size(),
        FieldType::Array(t, n) => fixed_size(t, schema_custom_sizes)?.saturating_mul(*n),
        FieldType::FixedString(n) => *n,
        FieldType::Enum { width, .. } => *width,
        FieldType::Custom(id) => schema_custom_sizes(*id),
        FieldType::String | FieldType::Bytes => return None,
    })
}

/// Byte size of a fixed-size type within a built schema.
pub fn size_in(schema: &Schema, ty: &FieldType) -> Option<usize> {
    fixed_size(ty, &|id| schema.custom_types[id].size)
}

impl Value {
    /// About how many bytes this value takes as JSON (for result budgets).
    pub fn approx_json_bytes(&self) -> usize {
        match self {
            Value::U64(_) | Value::I64(_) | Value::F64(_) => 20,
            Value::F32(_) => 12,
            Value::Bool(_) => 5,
            Value::Enum(_) => 16,
            // Exactly as JSON escapes it: control characters take up to six bytes.
            Value::Str(s) => {
                2 + s
                    .bytes()
                    .map(|b| match b {
                        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
                        0..0x20 => 6,
                        _ => 1,
                    })
                    .sum::<usize>()
            }
            Value::Bytes(b) => b.len() * 2 + 2,
            Value::Array(v) | Value::Struct(v) => 2 + v.iter().map(|x| x.approx_json_bytes() + 1).sum::<usize>(),
        }
    }

    /// The zero value of a type: 0, false, empty string, first enum variant.
    pub fn zero(ty: &FieldType, schema: &Schema) -> Value {
        match ty {
            FieldType::Scalar(s) => match s {
                Scalar::U8 | Scalar::U16 | Scalar::U32 | Scalar::U64 => Value::U64(0),
                Scalar::I8 | Scalar::I16 | Scalar::I32 | Scalar::I64 => Value::I64(0),
                Scalar::F32 => Value::F32(0.0),
                Scalar::F64 => Value::F64(0.0),
                Scalar::Bool => Value::Bool(false),
            },
            FieldType::Array(t, n) => Value::Array(vec![Value::zero(t, schema); *n]),
            FieldType::FixedString(_) | FieldType::String => Value::Str(String::new()),
            FieldType::Bytes => Value::Bytes(Vec::new()),
            FieldType::Enum { .. } => Value::Enum(0),
            FieldType::Custom(id) => {
                Value::Struct(schema.custom_types[*id].fields.iter().map(|f| Value::zero(&f.ty, schema)).collect())
            }
        }
    }

    /// Unsigned view of an integer value, if it is one and non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

fn scalar_range_check(s: Scalar, v: &Value) -> Result<(), String> {
    let (min, max): (i128, i128) = match s {
        Scalar::U8 => (0, u8::MAX.into()),
        Scalar::U16 => (0, u16::MAX.into()),
        Scalar::U32 => (0, u32::MAX.into()),
        Scalar::U64 => (0, u64::MAX.into()),
        Scalar::I8 => (i8::MIN.into(), i8::MAX.into()),
        Scalar::I16 => (i16::MIN.into(), i16::MAX.into()),
        Scalar::I32 => (i32::MIN.into(), i32::MAX.into()),
        Scalar::I64 => (i64::MIN.into(), i64::MAX.into()),
        _ => return Ok(()),
    };
    let x: i128 = match *v {
        Value::U64(x) => x.into(),
        Value::I64(x) => x.into(),
        _ => return Err(format!("expected {}", s.name())),
    };
    if x < min || x > max {
        return Err(format!("{x} is out of range for {}", s.name()));
    }
    Ok(())
}

/// Check that a value has the shape of a type (and fits it), without encoding.
pub fn check(ty: &FieldType, v: &Value, schema: &Schema) -> Result<(), String> {
    match (ty, v) {
        (FieldType::Scalar(s), _) if s.is_integer() => scalar_range_check(*s, v),
        (FieldType::Scalar(Scalar::F32), Value::F32(_))
        | (FieldType::Scalar(Scalar::F64), Value::F64(_))
        | (FieldType::Scalar(Scalar::Bool), Value::Bool(_))
        | (FieldType::String, Value::Str(_))
        | (FieldType::Bytes, Value::Bytes(_)) => Ok(()),
        (FieldType::Array(t, n), Value::Array(items)) => {
            if items.len() != *n {
                return Err(format!("expected an array of {n} elements, got {}", items.len()));
            }
            for (i, item) in items.iter().enumerate() {
                check(t, item, schema).map_err(|e| format!("element {i}: {e}"))?;
            }
            Ok(())
        }
        (FieldType::FixedString(n), Value::Str(s)) => {
            if s.len() > *n {
                return Err(format!("string of {} bytes is longer than {n}", s.len()));
            }
            if s.contains('\0') {
                return Err("fixed string must not contain NUL characters".into());
            }
            Ok(())
        }
        (FieldType::Enum { id, .. }, Value::Enum(i)) => {
            let e = &schema.enums[*id];
            if usize::from(*i) >= e.variants.len() {
                return Err(format!("variant index {i} is out of range for enum {}", e.name));
            }
            Ok(())
        }
        (FieldType::Custom(id), Value::Struct(vals)) => {
            let c = &schema.custom_types[*id];
            if vals.len() != c.fields.len() {
                return Err(format!("expected {} fields for {}", c.fields.len(), c.name));
            }
            for (f, v) in c.fields.iter().zip(vals) {
                check(&f.ty, v, schema).map_err(|e| format!("{}: {e}", f.name))?;
            }
            Ok(())
        }
        _ => Err(format!("expected {}", type_word(ty, schema))),
    }
}

fn type_word(ty: &FieldType, schema: &Schema) -> String {
    match ty {
        FieldType::Scalar(s) => s.name().to_string(),
        FieldType::Array(t, n) => format!("[{}; {n}]", type_word(t, schema)),
        FieldType::FixedString(n) => format!("a string of at most {n} bytes"),
        FieldType::Enum { id, .. } => format!("a variant of enum {}", schema.enums[*id].name),
        FieldType::Custom(id) => format!("a {} object", schema.custom_types[*id].name),
        FieldType::String => "a string".into(),
        FieldType::Bytes => "a hex string of bytes".into(),
    }
}

/// Write a checked value of a fixed-size type into `out` (exactly its size).
/// Call [`check`] first; a mismatched value is written as zeroes.
pub fn encode_fixed(ty: &FieldType, v: &Value, schema: &Schema, out: &mut [u8]) {
    match (ty, v) {
        (FieldType::Scalar(s), _) => match (s, v) {
            (Scalar::F32, Value::F32(x)) => out.copy_from_slice(&x.to_le_bytes()),
            (Scalar::F64, Value::F64(x)) => out.copy_from_slice(&x.to_le_bytes()),
            (Scalar::Bool, Value::Bool(b)) => out[0] = u8::from(*b),
            (_, Value::U64(x)) => out.copy_from_slice(&x.to_le_bytes()[..s.size()]),
            (_, Value::I64(x)) => out.copy_from_slice(&x.to_le_bytes()[..s.size()]),
            _ => out.fill(0),
        },
        (FieldType::Array(t, _), Value::Array(items)) => {
            let es = size_in(schema, t).unwrap_or(0);
            for (item, chunk) in items.iter().zip(out.chunks_exact_mut(es.max(1))) {
                encode_fixed(t, item, schema, chunk);
            }
        }
        (FieldType::FixedString(_), Value::Str(s)) => {
            out.fill(0);
            let n = s.len().min(out.len());
            out[..n].copy_from_slice(&s.as_bytes()[..n]);
        }
        (FieldType::Enum { width, .. }, Value::Enum(i)) => {
            out.copy_from_slice(&i.to_le_bytes()[..*width]);
        }
        (FieldType::Custom(id), Value::Struct(vals)) => {
            let mut off = 0;
            for (f, v) in schema.custom_types[*id].fields.iter().zip(vals) {
                let n = f.size.unwrap_or(0);
                encode_fixed(&f.ty, v, schema, &mut out[off..off + n]);
                off += n;
            }
        }
        _ => out.fill(0),
    }
}

fn le_u64(b: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(buf)
}

fn le_i64(b: &[u8]) -> i64 {
    // Sign-extend from the top byte.
    let fill = if b.last().is_some_and(|x| x & 0x80 != 0) { 0xff } else { 0 };
    let mut buf = [fill; 8];
    buf[..b.len()].copy_from_slice(b);
    i64::from_le_bytes(buf)
}

/// Decode a fixed-size type from exactly its bytes. Returns an error for byte
/// patterns no value encodes to (bool other than 0/1, enum index out of range,
/// invalid UTF-8 in a fixed string): such bytes can only come from corruption.
pub fn decode_fixed(ty: &FieldType, b: &[u8], schema: &Schema) -> Result<Value, String> {
    Ok(match ty {
        FieldType::Scalar(s) => match s {
            Scalar::U8 | Scalar::U16 | Scalar::U32 | Scalar::U64 => Value::U64(le_u64(b)),
            Scalar::I8 | Scalar::I16 | Scalar::I32 | Scalar::I64 => Value::I64(le_i64(b)),
            Scalar::F32 => Value::F32(f32::from_bits(le_u64(b) as u32)),
            Scalar::F64 => Value::F64(f64::from_bits(le_u64(b))),
            Scalar::Bool => match b[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                x => return Err(format!("invalid bool byte {x}")),
            },
        },
        FieldType::Array(t, _) => {
            let es = size_in(schema, t).unwrap_or(1).max(1);
            Value::Array(b.chunks_exact(es).map(|c| decode_fixed(t, c, schema)).collect::<Result<_, _>>()?)
        }
        FieldType::FixedString(_) => {
            let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
            if b[end..].iter().any(|&x| x != 0) {
                return Err("fixed string has bytes after its NUL padding".into());
            }
            Value::Str(
                std::str::from_utf8(&b[..end]).map_err(|_| "fixed string is not valid UTF-8".to_string())?.to_string(),
            )
        }
        FieldType::Enum { id, .. } => {
            let i = le_u64(b);
            if i >= schema.enums[*id].variants.len() as u64 {
                return Err(format!("enum index {i} out of range"));
            }
            Value::Enum(i as u16)
        }
        FieldType::Custom(id) => {
            let mut off = 0;
            let mut vals = Vec::new();
            for f in &schema.custom_types[*id].fields {
                let n = f.size.unwrap_or(0);
                vals.push(decode_fixed(&f.ty, &b[off..off + n], schema)?);
                off += n;
            }
            Value::Struct(vals)
        }
        FieldType::String | FieldType::Bytes => {
            return Err("variable-length type has no fixed layout".into());
        }
    })
}

/// Decode a variable-length value (`string`/`bytes`) from its bytes.
pub fn decode_var(ty: &FieldType, b: &[u8]) -> Result<Value, String> {
    match ty {
        FieldType::String => {
            Ok(Value::Str(std::str::from_utf8(b).map_err(|_| "string is not valid UTF-8".to_string())?.to_string()))
        }
        _ => Ok(Value::Bytes(b.to_vec())),
    }
}

/// Bytes of a variable-length value.
pub fn encode_var(v: &Value) -> Vec<u8> {
    match v {
        Value::Str(s) => s.as_bytes().to_vec(),
        Value::Bytes(b) => b.clone(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------- JSON

fn json_int(v: &serde_json::Value, s: Scalar) -> Result<Value, String> {
    let signed = matches!(s, Scalar::I8 | Scalar::I16 | Scalar::I32 | Scalar::I64);
    let parsed = match v {
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::U64(u)
            } else if let Some(i) = n.as_i64() {
                Value::I64(i)
            } else {
                return Err(format!("expected an integer ({}), got {n}", s.name()));
            }
        }
        serde_json::Value::String(t) => {
            if let Ok(u) = t.parse::<u64>() {
                Value::U64(u)
            } else if let Ok(i) = t.parse::<i64>() {
                Value::I64(i)
            } else {
                return Err(format!("expected an integer ({}), got \"{t}\"", s.name()));
            }
        }
        other => {
            return Err(format!("expected an integer ({}), got {}", s.name(), json_kind(other)));
        }
    };
    scalar_range_check(s, &parsed)?;
    Ok(match (signed, parsed) {
        (true, Value::U64(u)) => Value::I64(u as i64), // range-checked above
        (false, Value::I64(i)) => Value::U64(i as u64),
        (_, p) => p,
    })
}

fn json_float(v: &serde_json::Value) -> Result<f64, String> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| format!("bad number {n}")),
        serde_json::Value::String(s) => match s.as_str() {
            "NaN" | "nan" => Ok(f64::NAN),
            "-NaN" | "-nan" => Ok(-f64::NAN),
            "inf" | "Infinity" | "+inf" => Ok(f64::INFINITY),
            "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => s.parse::<f64>().map_err(|_| format!("expected a number, got \"{s}\"")),
        },
        other => Err(format!("expected a number, got {}", json_kind(other))),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Convert JSON into a checked value of `ty`.
pub fn from_json(ty: &FieldType, v: &serde_json::Value, schema: &Schema) -> Result<Value, String> {
    let value = match ty {
        FieldType::Scalar(s) if s.is_integer() => json_int(v, *s)?,
        FieldType::Scalar(Scalar::F32) => {
            let x = json_float(v)?;
            // f64 -> f32 must be exact for finite inputs that came from an f32;
            // other values round to nearest, which is what users expect. A
            // finite number beyond f32's range is an error, not infinity
            // (infinities are written as "inf" / "-inf").
            let y = x as f32;
            if x.is_finite() && !y.is_finite() {
                return Err(format!("{x} is out of range for f32 (largest magnitude {:e})", f32::MAX));
            }
            Value::F32(y)
        }
        FieldType::Scalar(Scalar::F64) => Value::F64(json_float(v)?),
        FieldType::Scalar(_) => match v {
            serde_json::Value::Bool(b) => Value::Bool(*b),
            other => return Err(format!("expected a boolean, got {}", json_kind(other))),
        },
        FieldType::Array(t, n) => match v {
            serde_json::Value::Array(items) => {
                if items.len() != *n {
                    return Err(format!("expected an array of {n} elements, got {}", items.len()));
                }
                Value::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, x)| from_json(t, x, schema).map_err(|e| format!("element {i}: {e}")))
                        .collect::<Result<_, _>>()?,
                )
            }
            other => {
                return Err(format!("expected an array of {n} elements, got {}", json_kind(other)));
            }
        },
        FieldType::FixedString(_) | FieldType::String => match v {
            serde_json::Value::String(s) => Value::Str(s.clone()),
            other => return Err(format!("expected a string, got {}", json_kind(other))),
        },
        FieldType::Bytes => match v {
            serde_json::Value::String(s) => Value::Bytes(hex_decode(s)?),
            other => return Err(format!("expected a hex string, got {}", json_kind(other))),
        },
        FieldType::Enum { id, .. } => {
            let e = &schema.enums[*id];
            match v {
                serde_json::Value::String(s) => Value::Enum(e.variant_index(s).ok_or_else(|| {
                    format!("unknown variant \"{s}\" of enum {} (expected one of {})", e.name, e.variants.join(", "))
                })? as u16),
                other => {
                    return Err(format!("expected a variant name of enum {}, got {}", e.name, json_kind(other)));
                }
            }
        }
        FieldType::Custom(id) => {
            let c = &schema.custom_types[*id];
            let serde_json::Value::Object(map) = v else {
                return Err(format!("expected a {} object, got {}", c.name, json_kind(v)));
            };
            for k in map.keys() {
                if !c.fields.iter().any(|f| &f.name == k) {
                    return Err(format!("unknown field `{k}` of type {}", c.name));
                }
            }
            let mut vals = Vec::with_capacity(c.fields.len());
            for f in &c.fields {
                vals.push(match map.get(&f.name) {
                    Some(x) => from_json(&f.ty, x, schema).map_err(|e| format!("{}: {e}", f.name))?,
                    None => f.default.clone(),
                });
            }
            Value::Struct(vals)
        }
    };
    check(ty, &value, schema)?;
    Ok(value)
}

fn float_json(x: f64) -> serde_json::Value {
    if x.is_nan() {
        // The sign is kept (filters order -NaN below -inf); payloads are not.
        if x.is_sign_negative() { "-NaN".into() } else { "NaN".into() }
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// An `f32` as the `f64` of its shortest decimal form (`0.1f32` → `0.1`,
/// not `0.10000000149011612`): JSON of `f32` fields is about half as long,
/// and reading it back as `f32` gives the same bits (tested below).
fn f32_as_f64_shortest(x: f32) -> f64 {
    if !x.is_finite() {
        return f64::from(x);
    }
    // Rust's `Display` for floats is the shortest text that parses back to
    // the same value.
    let mut buf = [0u8; 64];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    if std::io::Write::write_fmt(&mut cur, format_args!("{x}")).is_err() {
        return f64::from(x);
    }
    let n = cur.position() as usize;
    std::str::from_utf8(&buf[..n]).ok().and_then(|t| t.parse::<f64>().ok()).unwrap_or(f64::from(x))
}

/// JSON form of a value of `ty` (see the module docs for the rules).
pub fn to_json(ty: &FieldType, v: &Value, schema: &Schema) -> serde_json::Value {
    match (ty, v) {
        (_, Value::U64(x)) => {
            if *x <= JSON_SAFE_INT {
                (*x).into()
            } else {
                x.to_string().into()
            }
        }
        (_, Value::I64(x)) => {
            if x.unsigned_abs() <= JSON_SAFE_INT {
                (*x).into()
            } else {
                x.to_string().into()
            }
        }
        (_, Value::F32(x)) => float_json(f32_as_f64_shortest(*x)),
        (_, Value::F64(x)) => float_json(*x),
        (_, Value::Bool(b)) => (*b).into(),
        (_, Value::Str(s)) => s.clone().into(),
        (_, Value::Bytes(b)) => hex_encode(b).into(),
        (FieldType::Enum { id, .. }, Value::Enum(i)) => {
            schema.enums[*id].variants.get(usize::from(*i)).map_or(serde_json::Value::Null, |s| s.clone().into())
        }
        (FieldType::Array(t, _), Value::Array(items)) => {
            items.iter().map(|x| to_json(t, x, schema)).collect::<Vec<_>>().into()
        }
        (FieldType::Custom(id), Value::Struct(vals)) => {
            let mut m = serde_json::Map::new();
            for (f, x) in schema.custom_types[*id].fields.iter().zip(vals) {
                m.insert(f.name.clone(), to_json(&f.ty, x, schema));
            }
            m.into()
        }
        _ => serde_json::Value::Null,
    }
}

/// [`to_json`] written straight out as JSON text (the same text
/// `serde_json` would write for [`to_json`]'s value), without building the
/// value first: live deltas render rows this way.
pub fn write_json(ty: &FieldType, v: &Value, schema: &Schema, out: &mut Vec<u8>) {
    let put = |out: &mut Vec<u8>, j: &serde_json::Value| {
        let _ = serde_json::to_writer(&mut *out, j);
    };
    match (ty, v) {
        (_, Value::U64(_) | Value::I64(_) | Value::F32(_) | Value::F64(_) | Value::Bool(_)) => {
            put(out, &to_json(ty, v, schema));
        }
        (FieldType::Array(t, _), Value::Array(items)) => {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(t, x, schema, out);
            }
            out.push(b']');
        }
        _ => put(out, &to_json(ty, v, schema)),
    }
}

pub fn hex_encode(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

pub fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("hex string has an odd number of digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("invalid hex digit at position {i}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NaN's sign survives JSON both ways (filters order -NaN below -inf).
    #[test]
    fn nan_signs_round_trip_through_json() {
        for x in [f64::NAN, -f64::NAN] {
            let j = float_json(x);
            let back = json_float(&j).unwrap_or(0.0);
            assert!(back.is_nan() && back.is_sign_negative() == x.is_sign_negative(), "{j}");
        }
        assert_eq!(float_json(-f64::NAN), serde_json::json!("-NaN"));
    }

    /// `f32` values are written in their shortest form and read back to
    /// the same bits (through `f64`, as JSON numbers are read).
    #[test]
    fn f32_json_is_shortest_and_round_trips() {
        assert_eq!(f32_as_f64_shortest(0.1).to_bits(), 0.1f64.to_bits());
        assert_eq!(f32_as_f64_shortest(870.046_14).to_bits(), 870.046_14f64.to_bits());
        assert_eq!(float_json(f32_as_f64_shortest(1.0e-45)).to_string(), "1e-45");
        let mut x: u32 = 0x1234_5678;
        for i in 0..300_000u32 {
            // A cheap full-range walk over bit patterns (xorshift), plus the
            // first denormals and values around powers of two.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            for bits in [x, i, 0x3f80_0000 + (i % 64), 0x4b00_0000 - (i % 64)] {
                let f = f32::from_bits(bits);
                if !f.is_finite() {
                    continue;
                }
                let j = float_json(f32_as_f64_shortest(f));
                let back = j.as_f64().unwrap_or(f64::NAN) as f32;
                assert_eq!(back.to_bits(), f.to_bits(), "{f:e} wrote {j}");
            }
        }
    }

    /// Result budgets count strings exactly as JSON writes them.
    #[test]
    fn string_sizes_match_their_json() {
        for s in ["plain", "quote\"back\\slash", "\u{1}\u{2}\n\t\r\u{8}\u{c}\u{1f}", "ünïcødé", ""] {
            let json = serde_json::to_string(s).unwrap_or_default();
            assert_eq!(Value::Str(s.into()).approx_json_bytes(), json.len(), "{s:?}");
        }
    }
}
