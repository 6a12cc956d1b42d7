//! Short textual notations for schemas and partition specs, shared by every front end
//! (the CLI's `--schema`/`--partition-by`, SQL's `PARTITIONED BY (...)`).
//!
//! - schema: `"id:long not null,name:string,amount:decimal(10,2)"` (Iceberg types);
//! - partitioning: `"day(ts),bucket(16,id),truncate(name,4),region"` (Spark/Iceberg
//!   transforms; `years`/`months`/`days`/`hours` accepted too).
//!
//! Errors are messages saying which part is wrong; the caller says where it came from.

use crate::model::{FieldSpec, PartitionFieldSpec};
use crate::validate::parse_type;

/// Splits on `sep` outside parentheses and brackets.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '<' => depth += 1,
            ')' | ']' | '>' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Parses `"id:long not null,name:string,amount:decimal(10,2)"`.
pub fn parse_schema(s: &str) -> Result<Vec<FieldSpec>, String> {
    let mut fields = Vec::new();
    for (i, part) in split_top(s, ',').into_iter().enumerate() {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("column {} is empty", i + 1));
        }
        let (name, ty) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?} is not NAME:TYPE"))?;
        let mut ty = ty.trim().to_string();
        let mut required = false;
        let lower = ty.to_ascii_lowercase();
        if let Some(stripped) = lower.strip_suffix("not null") {
            ty = ty[..stripped.trim_end().len()].to_string();
            required = true;
        }
        parse_type(&ty).map_err(|e| format!("column {}: {e}", name.trim()))?;
        fields.push(FieldSpec {
            name: name.trim().to_string(),
            type_json: ty.trim().to_string(),
            required,
            doc: None,
        });
    }
    Ok(fields)
}

/// Parses `"day(ts),bucket(16,id),region"`: Iceberg/Spark transforms of columns.
pub fn parse_partition(s: &str) -> Result<Vec<PartitionFieldSpec>, String> {
    let mut out = Vec::new();
    for part in split_top(s, ',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some(open) = part.find('(') else {
            out.push(PartitionFieldSpec {
                source_column: part.to_string(),
                transform: "identity".into(),
                name: None,
            });
            continue;
        };
        let func = part[..open].trim().to_ascii_lowercase();
        let args = part[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| format!("{part:?} lacks a closing ')'"))?;
        let args: Vec<&str> = args.split(',').map(str::trim).collect();
        let (column, width) = match args.as_slice() {
            [c] => (*c, None),
            [a, b] => match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(n), _) => (*b, Some(n)),
                (_, Ok(n)) => (*a, Some(n)),
                _ => return Err(format!("{part:?} needs a number argument")),
            },
            _ => return Err(format!("{part:?} has too many arguments")),
        };
        let transform = match (func.as_str(), width) {
            ("identity", None) => "identity".to_string(),
            ("year" | "years", None) => "year".to_string(),
            ("month" | "months", None) => "month".to_string(),
            ("day" | "days", None) => "day".to_string(),
            ("hour" | "hours", None) => "hour".to_string(),
            ("bucket", Some(n)) => format!("bucket[{n}]"),
            ("truncate", Some(n)) => format!("truncate[{n}]"),
            _ => {
                return Err(format!("{part:?} is not a partition transform"));
            }
        };
        out.push(PartitionFieldSpec {
            source_column: column.to_string(),
            transform,
            name: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_notation() {
        let f = parse_schema("id:long not null, amount:decimal(10,2),ts:timestamp").unwrap();
        assert_eq!(f.len(), 3);
        assert!(f[0].required);
        assert_eq!(f[1].type_json, "decimal(10,2)");
        assert!(!f[2].required);
        assert!(parse_schema("id:lung").is_err());
        assert!(parse_schema("id").is_err());
        assert!(parse_schema("id:long,").is_err());
    }

    #[test]
    fn partition_notation() {
        let p = parse_partition("day(ts), bucket(16, id), truncate(name, 4), region").unwrap();
        let t: Vec<_> = p
            .iter()
            .map(|f| (f.source_column.as_str(), f.transform.as_str()))
            .collect();
        assert_eq!(
            t,
            [
                ("ts", "day"),
                ("id", "bucket[16]"),
                ("name", "truncate[4]"),
                ("region", "identity")
            ]
        );
        assert!(parse_partition("decade(ts)").is_err());
        assert!(parse_partition("bucket(id)").is_err());
    }
}
