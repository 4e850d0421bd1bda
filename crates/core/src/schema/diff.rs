//! What differs between two schemas, in words: used when a data directory
//! holds another schema than the one given, so the operator sees which
//! tables and fields changed instead of two fingerprints.

use serde_json::Value as J;

use super::Schema;

const KINDS: &[(&str, &str)] =
    &[("tables", "table"), ("enums", "enum"), ("custom_types", "custom type"), ("relations", "relation")];

fn items<'a>(doc: &'a J, key: &str) -> Vec<(&'a str, &'a J)> {
    doc[key].as_array().map_or_else(Vec::new, |a| a.iter().map(|i| (i["name"].as_str().unwrap_or(""), i)).collect())
}

fn show(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        J::Null => "none".into(),
        other => other.to_string(),
    }
}

/// Differences from `old` (e.g. the directory's schema) to `new` (the one
/// given), one line each, at most `max` lines (then a count of the rest).
pub fn differences(old: &Schema, new: &Schema, max: usize) -> Vec<String> {
    let (a, b) = (old.to_json(), new.to_json());
    let mut out = Vec::new();
    if old.name != new.name || old.version != new.version {
        out.push(format!("database {} v{} → {} v{}", old.name, old.version, new.name, new.version));
    }
    for &(key, what) in KINDS {
        let (xs, ys) = (items(&a, key), items(&b, key));
        for (name, x) in &xs {
            let Some((_, y)) = ys.iter().find(|(n, _)| n == name) else {
                out.push(format!("{what} `{name}` is only in the directory's schema"));
                continue;
            };
            if x == y {
                continue;
            }
            let (fx, fy) = (items(x, "fields"), items(y, "fields"));
            for (f, xv) in &fx {
                match fy.iter().find(|(n, _)| n == f) {
                    None => out.push(format!("{what} `{name}`: field `{f}` removed")),
                    Some((_, yv)) if xv != yv => {
                        let changed: Vec<String> = xv
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(k, v)| yv.get(k.as_str()) != Some(v))
                            .map(|(k, v)| format!("{k} {} → {}", show(v), show(&yv[k.as_str()])))
                            .collect();
                        out.push(format!("{what} `{name}`: field `{f}`: {}", changed.join(", ")));
                    }
                    Some(_) => {}
                }
            }
            for (f, _) in &fy {
                if !fx.iter().any(|(n, _)| n == f) {
                    out.push(format!("{what} `{name}`: field `{f}` added"));
                }
            }
            let order = |v: &[(&str, &J)]| v.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
            if order(&fx) != order(&fy)
                && fx.len() == fy.len()
                && fx.iter().all(|(n, _)| fy.iter().any(|(m, _)| m == n))
            {
                out.push(format!("{what} `{name}`: fields reordered"));
            }
            if let (Some(ox), Some(oy)) = (x.as_object(), y.as_object()) {
                for (k, v) in ox {
                    if k != "fields" && k != "name" && oy.get(k) != Some(v) {
                        out.push(format!("{what} `{name}`: {k} {} → {}", show(v), show(&oy[k.as_str()])));
                    }
                }
            }
        }
        for (name, _) in &ys {
            if !xs.iter().any(|(n, _)| n == name) {
                out.push(format!("{what} `{name}` is only in the given schema"));
            }
        }
    }
    if out.len() > max {
        let rest = out.len() - max;
        out.truncate(max);
        out.push(format!("… and {rest} more"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_changed() {
        let a = Schema::from_toml_str(
            "[tables.p]\n[[tables.p.fields]]\nname = \"x\"\ntype = \"u8\"\n[[tables.p.fields]]\nname = \"y\"\ntype = \"u8\"\n[tables.q]\n[[tables.q.fields]]\nname = \"z\"\ntype = \"u8\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let b = Schema::from_toml_str(
            "[tables.p]\n[[tables.p.fields]]\nname = \"x\"\ntype = \"u16\"\n[[tables.p.fields]]\nname = \"w\"\ntype = \"u8\"\n[tables.r]\n[[tables.r.fields]]\nname = \"z\"\ntype = \"u8\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let d = differences(&a, &b, 20).join("\n");
        assert!(d.contains("table `p`: field `x`: type u8 → u16"), "{d}");
        assert!(d.contains("table `p`: field `y` removed"), "{d}");
        assert!(d.contains("table `p`: field `w` added"), "{d}");
        assert!(d.contains("table `q` is only in the directory's schema"), "{d}");
        assert!(d.contains("table `r` is only in the given schema"), "{d}");
        assert!(differences(&a, &a, 20).is_empty());
        assert_eq!(differences(&a, &b, 2).last().map(String::as_str), Some("… and 3 more"));
    }
}
