//! InfluxDB line protocol: escaping and formatting of one point per line.
//! `measurement,tag=value field=value timestamp`: measurement names escape commas and spaces;
//! tag keys, tag values and field keys escape commas, equals signs and spaces; string field
//! values are double-quoted with `"` and `\` escaped. Integers carry an `i` suffix; floats are
//! written without one, so `100` stays a float.
//!
//! `read` goes the other way, as far as the uploader needs it to tell which lines of a write
//! request InfluxDB refused: a line's measurement and its field keys with their types.

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

pub(crate) fn escape_measurement(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s, &[',', ' ']);
    out
}

/// Tag keys, tag values and field keys.
pub(crate) fn escape_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s, &[',', '=', ' ']);
    out
}

/// `measurement,machine=...,k=v` with escaping, tags sorted by key as InfluxDB prefers.
pub(crate) fn series_prefix(measurement: &str, machine: &str, tags: &[(String, String)]) -> String {
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
pub(crate) fn write_value(out: &mut String, v: &Value) {
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
pub(crate) fn line<'a>(
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

/// A field value's type, as InfluxDB names it in its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    Float,
    Integer,
    Unsigned,
    String,
    Boolean,
}

impl FieldType {
    /// InfluxDB's word for the type (`is type string, already exists as type float`).
    pub fn from_influx(word: &str) -> Option<FieldType> {
        Some(match word {
            "float" => FieldType::Float,
            "integer" => FieldType::Integer,
            "unsigned" => FieldType::Unsigned,
            "string" => FieldType::String,
            "boolean" => FieldType::Boolean,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::Unsigned => "unsigned",
            FieldType::String => "string",
            FieldType::Boolean => "boolean",
        }
    }

    /// The type of an unquoted field value, `None` when it is not one.
    fn of_bare(v: &str) -> Option<FieldType> {
        if let Some(i) = v.strip_suffix('i') {
            return i.parse::<i64>().ok().map(|_| FieldType::Integer);
        }
        if let Some(u) = v.strip_suffix('u') {
            return u.parse::<u64>().ok().map(|_| FieldType::Unsigned);
        }
        match v {
            "t" | "T" | "true" | "True" | "TRUE" | "f" | "F" | "false" | "False" | "FALSE" => {
                Some(FieldType::Boolean)
            }
            _ => v
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(|_| FieldType::Float),
        }
    }
}

/// What `read` finds in one line: the measurement and each field key (unescaped) with the
/// type of its value.
#[derive(Debug, PartialEq)]
pub(crate) struct Read {
    pub measurement: String,
    pub fields: Vec<(String, FieldType)>,
}

/// Read one line of line protocol; `None` when it is not valid (no field, a value of no
/// type, an unterminated string, a timestamp that is not an integer).
pub(crate) fn read(line: &str) -> Option<Read> {
    let b = line.as_bytes();
    let mut i = 0;
    // An unescaped byte among `stop` ends a name; a backslash keeps the next byte.
    let name = |i: &mut usize, stop: &[u8]| -> String {
        let mut out = Vec::new();
        while *i < b.len() && !stop.contains(&b[*i]) {
            if b[*i] == b'\\' && *i + 1 < b.len() && stop.contains(&b[*i + 1]) {
                *i += 1;
            }
            out.push(b[*i]);
            *i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let measurement = name(&mut i, b", ");
    if measurement.is_empty() {
        return None;
    }
    // Tags: skipped up to the first unescaped space.
    while i < b.len() && b[i] != b' ' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i += 1;
    let mut fields = Vec::new();
    loop {
        let key = name(&mut i, b",= ");
        if key.is_empty() || b.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        let ty = if b.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match b.get(i)? {
                    b'\\' => i += 2,
                    b'"' => break,
                    _ => i += 1,
                }
            }
            i += 1;
            FieldType::String
        } else {
            let start = i;
            while i < b.len() && b[i] != b',' && b[i] != b' ' {
                i += 1;
            }
            FieldType::of_bare(line.get(start..i)?)?
        };
        fields.push((key, ty));
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b' ') => {
                let ts = line.get(i + 1..)?;
                if !ts.is_empty() && ts.parse::<i64>().is_err() {
                    return None;
                }
                break;
            }
            None => break,
            Some(_) => return None,
        }
    }
    Some(Read {
        measurement,
        fields,
    })
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

    #[test]
    fn read_finds_the_measurement_and_field_types_of_written_lines() {
        let tags = vec![("line name".to_string(), "A,1=x".to_string())];
        let p = series_prefix("my meas,x", "JET 01", &tags);
        let vals = [
            ("f\\=1", Value::Str(r#"say "hi", \ bye=x"#.into())),
            ("g", Value::Float(-0.25)),
            ("i", Value::Int(-3)),
            ("b", Value::Bool(true)),
        ];
        let l = line(&p, vals.iter().map(|(k, v)| (*k, v)), 5).unwrap();
        let r = read(&l).expect("a valid line");
        assert_eq!(r.measurement, "my meas,x");
        assert_eq!(
            r.fields,
            vec![
                ("f=1".to_string(), FieldType::String),
                ("g".to_string(), FieldType::Float),
                ("i".to_string(), FieldType::Integer),
                ("b".to_string(), FieldType::Boolean),
            ]
        );
        assert_eq!(read("a=b v=1").map(|r| r.measurement), Some("a=b".into()));
        assert_eq!(
            read("m v=1u").map(|r| r.fields),
            Some(vec![("v".into(), FieldType::Unsigned)])
        );
    }

    #[test]
    fn read_refuses_what_influxdb_cannot_parse() {
        for bad in [
            "broken line without fields",
            "m",
            "m v=",
            "m v=abc 1",
            "m v=\"open 1",
            "m v=1 notatime",
            "m,t=a",
            " v=1",
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
    }
}
