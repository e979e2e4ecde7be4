//! InfluxDB line protocol: escaping and formatting of one point per line.
//! `measurement,tag=value field=value timestamp`: measurement names escape commas and spaces;
//! tag keys, tag values and field keys escape commas, equals signs and spaces; string field
//! values are double-quoted with `"` and `\` escaped. Integers carry an `i` suffix; floats are
//! written without one, so `100` stays a float.

use crate::registers::Value;
use std::fmt::Write;

fn escape_into(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        // A newline would end the line: it can only come from a config value, and is dropped.
        if c != '\n' && c != '\r' {
            out.push(c);
        }
    }
}

pub fn escape_measurement(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s, &[',', ' ']);
    out
}

/// Tag keys, tag values and field keys.
pub fn escape_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s, &[',', '=', ' ']);
    out
}

/// `measurement,machine=...,k=v` with escaping, tags sorted by key as InfluxDB prefers.
pub fn series_prefix(measurement: &str, machine: &str, tags: &[(String, String)]) -> String {
    let mut all: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.push(("machine", machine));
    all.sort();
    let mut out = escape_measurement(measurement);
    for (k, v) in all {
        out.push(',');
        out.push_str(&escape_key(k));
        out.push('=');
        out.push_str(&escape_key(v));
    }
    out
}

/// Append `value` in field syntax.
pub fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Float(f) => {
            let _ = write!(out, "{f}");
        }
        Value::Int(i) => {
            let _ = write!(out, "{i}i");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Str(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                if c != '\n' && c != '\r' {
                    out.push(c);
                }
            }
            out.push('"');
        }
    }
}

/// One line: `prefix` from `series_prefix`, fields as (escaped key, value), time in ms.
pub fn line<'a>(
    prefix: &str,
    fields: impl Iterator<Item = (&'a str, &'a Value)>,
    timestamp_ms: i64,
) -> Option<String> {
    let mut out = String::with_capacity(prefix.len() + 64);
    out.push_str(prefix);
    let mut first = true;
    for (k, v) in fields {
        out.push(if first { ' ' } else { ',' });
        first = false;
        out.push_str(k);
        out.push('=');
        write_value(&mut out, v);
    }
    if first {
        return None;
    }
    let _ = write!(out, " {timestamp_ms}");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_each_part_by_its_rules() {
        let tags = vec![("line name".to_string(), "A,1=x".to_string())];
        let p = series_prefix("my meas,x", "JET 01", &tags);
        assert_eq!(p, r"my\ meas\,x,line\ name=A\,1\=x,machine=JET\ 01");
        let s = Value::Str(r#"say "hi" \ bye"#.into());
        let l = line(&p, [("f\\=1", &s)].into_iter(), 5).unwrap();
        assert_eq!(
            l,
            r#"my\ meas\,x,line\ name=A\,1\=x,machine=JET\ 01 f\=1="say \"hi\" \\ bye" 5"#
        );
    }

    #[test]
    fn types_have_their_suffixes() {
        let vals = [
            ("f", Value::Float(100.0)),
            ("g", Value::Float(-0.25)),
            ("i", Value::Int(-3)),
            ("b", Value::Bool(true)),
        ];
        let l = line("m", vals.iter().map(|(k, v)| (*k, v)), 1).unwrap();
        assert_eq!(l, "m f=100,g=-0.25,i=-3i,b=true 1");
        assert_eq!(line("m", std::iter::empty(), 1), None);
    }
}
