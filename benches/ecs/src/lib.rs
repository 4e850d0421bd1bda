//! Shared fixtures of the side-by-side ECS benchmarks: the ecsdb schemas that
//! mirror the `ecs_bench_suite` component types.

/// Schema of `simple_insert` / `simple_iter`: Transform (4x4 matrix),
/// Position, Rotation and Velocity (vec3 each), one table per component.
pub const SIMPLE_SCHEMA: &str = r#"
[tables.transform]
[[tables.transform.fields]]
name = "m"
type = "[f32; 16]"
[tables.position]
[[tables.position.fields]]
name = "v"
type = "[f32; 3]"
[tables.rotation]
[[tables.rotation.fields]]
name = "v"
type = "[f32; 3]"
[tables.velocity]
[[tables.velocity.fields]]
name = "v"
type = "[f32; 3]"
"#;

/// Schema of `frag_iter`: 26 marker tables `a`..`z` and a `data` table.
pub fn frag_schema() -> String {
    use std::fmt::Write as _;
    let mut s = String::from("[tables.data]\n[[tables.data.fields]]\nname = \"x\"\ntype = \"f32\"\n");
    for c in 'a'..='z' {
        let _ = write!(s, "[tables.{c}]\n[[tables.{c}.fields]]\nname = \"x\"\ntype = \"f32\"\n");
    }
    s
}

/// Schema of `add_remove`: two one-field tables.
pub const ADD_REMOVE_SCHEMA: &str = r#"
[tables.a]
[[tables.a.fields]]
name = "x"
type = "f32"
[tables.b]
[[tables.b.fields]]
name = "x"
type = "f32"
"#;

/// Median of a set of timings (the middle one after sorting).
pub fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A duration as `12.3 us` or `4.56 ms`.
pub fn fmt_duration(d: std::time::Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 { format!("{:.2} ms", us / 1000.0) } else { format!("{us:.1} us") }
}
