//! What the Iceberg spec allows in names, types, schemas and partition transforms, checked
//! wherever one enters Firn (gRPC and REST creates, REST schema and spec updates, registered
//! metadata) before anything computes with it. iceberg-rust parses more than the spec
//! allows, and some of it panics later (`bucket[0]` and `truncate[0]` divide by zero).
//!
//! Every refusal is `InvalidArgument` naming the field: final, fix the request.

use iceberg::spec::{PartitionSpec, PrimitiveType, Schema, StructType, Transform, Type};

use crate::error::{Error, Result};

/// Longest column, field or partition name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Deepest nesting of structs, lists and maps in a schema.
pub const MAX_TYPE_DEPTH: usize = 32;
/// Largest decimal precision Iceberg allows.
pub const MAX_DECIMAL_PRECISION: u32 = 38;

/// A column or partition field name: not empty, no control character (NUL included), and at
/// most [`MAX_NAME_BYTES`].
pub fn name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(field, "the name is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(
            field,
            format!("the name is longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(
            field,
            format!("the name {name:?} contains the control character {c:?}"),
        ));
    }
    Ok(())
}

/// A type, recursively: decimal precision 1..=38 and scale at most the precision, `fixed`
/// of a positive length, no empty struct, valid field names, bounded depth.
pub fn data_type(field: &str, ty: &Type) -> Result<()> {
    check_type(field, ty, 0)
}

fn check_type(field: &str, ty: &Type, depth: usize) -> Result<()> {
    if depth > MAX_TYPE_DEPTH {
        return Err(Error::invalid(
            field,
            format!("types nest deeper than {MAX_TYPE_DEPTH} levels"),
        ));
    }
    match ty {
        Type::Primitive(PrimitiveType::Decimal { precision, scale }) => {
            if *precision == 0 || *precision > MAX_DECIMAL_PRECISION {
                return Err(Error::invalid(
                    field,
                    format!(
                        "decimal({precision},{scale}): precision must be 1 to {MAX_DECIMAL_PRECISION}"
                    ),
                ));
            }
            if scale > precision {
                return Err(Error::invalid(
                    field,
                    format!("decimal({precision},{scale}): scale exceeds precision"),
                ));
            }
            Ok(())
        }
        Type::Primitive(PrimitiveType::Fixed(0)) => Err(Error::invalid(
            field,
            "fixed[0]: a fixed type needs a positive length",
        )),
        Type::Primitive(_) => Ok(()),
        Type::Struct(s) => struct_type(field, s, depth + 1),
        Type::List(l) => check_type(
            &format!("{field}.element"),
            &l.element_field.field_type,
            depth + 1,
        ),
        Type::Map(m) => {
            check_type(&format!("{field}.key"), &m.key_field.field_type, depth + 1)?;
            check_type(
                &format!("{field}.value"),
                &m.value_field.field_type,
                depth + 1,
            )
        }
    }
}

fn struct_type(field: &str, s: &StructType, depth: usize) -> Result<()> {
    if s.fields().is_empty() {
        return Err(Error::invalid(field, "a struct needs at least one field"));
    }
    for f in s.fields() {
        let sub = format!("{field}.{}", f.name);
        name(&sub, &f.name)?;
        check_type(&sub, &f.field_type, depth)?;
    }
    Ok(())
}

/// A whole schema.
pub fn schema(field: &str, schema: &Schema) -> Result<()> {
    struct_type(field, schema.as_struct(), 0)
}

/// A transform's parameter: `bucket[N]` and `truncate[W]` need a positive one.
pub fn transform(field: &str, t: &Transform) -> Result<()> {
    match t {
        Transform::Bucket(0) => Err(Error::invalid(
            field,
            "bucket[0]: the number of buckets must be positive",
        )),
        Transform::Truncate(0) => Err(Error::invalid(
            field,
            "truncate[0]: the width must be positive",
        )),
        _ => Ok(()),
    }
}

/// A partition spec: its field names and transforms.
pub fn partition_spec(field: &str, spec: &PartitionSpec) -> Result<()> {
    for (i, f) in spec.fields().iter().enumerate() {
        let sub = format!("{field}[{i}]");
        name(&sub, &f.name)?;
        transform(&sub, &f.transform)?;
    }
    Ok(())
}

/// A partition spec a client sends (REST `add-spec`, create).
pub fn unbound_spec(field: &str, spec: &iceberg::spec::UnboundPartitionSpec) -> Result<()> {
    for (i, f) in spec.fields().iter().enumerate() {
        let sub = format!("{field}[{i}]");
        name(&sub, &f.name)?;
        transform(&sub, &f.transform)?;
    }
    Ok(())
}

/// Everything in a table's metadata: every schema and every partition spec.
pub fn metadata(field: &str, meta: &iceberg::spec::TableMetadata) -> Result<()> {
    for s in meta.schemas_iter() {
        schema(&format!("{field}.schemas[{}]", s.schema_id()), s)?;
    }
    for spec in meta.partition_specs_iter() {
        partition_spec(
            &format!("{field}.partition-specs[{}]", spec.spec_id()),
            spec,
        )?;
    }
    Ok(())
}

/// Parses an Iceberg JSON type: a primitive name or a JSON object.
pub fn parse_type(type_json: &str) -> std::result::Result<Type, String> {
    let t = type_json.trim();
    let value = if t.starts_with('{') {
        serde_json::from_str::<serde_json::Value>(t).map_err(|e| e.to_string())?
    } else {
        serde_json::Value::String(t.to_ascii_lowercase())
    };
    serde_json::from_value::<Type>(value).map_err(|_| {
        format!(
            "{type_json:?} is not an Iceberg type (boolean, int, long, float, double, decimal(P,S), \
             date, time, timestamp, timestamptz, string, uuid, fixed[L], binary, or a JSON struct/list/map)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_spec_forbids_is_refused() {
        for ok in ["decimal(38,0)", "decimal(10,10)", "fixed[1]", "long"] {
            assert!(data_type("t", &parse_type(ok).unwrap()).is_ok(), "{ok}");
        }
        for bad in [
            "decimal(39,0)",
            "decimal(0,0)",
            "decimal(10,11)",
            "fixed[0]",
        ] {
            // Some of these iceberg-rust refuses itself; none may pass both.
            if let Ok(t) = parse_type(bad) {
                assert!(data_type("t", &t).is_err(), "{bad}");
            }
        }
        let empty = r#"{"type":"struct","fields":[]}"#;
        assert!(data_type("t", &parse_type(empty).unwrap()).is_err());
        let nul = r#"{"type":"struct","fields":[{"id":1,"name":"a\u0000b","required":false,"type":"int"}]}"#;
        assert!(data_type("t", &parse_type(nul).unwrap()).is_err());
        assert!(transform("p", &Transform::Bucket(0)).is_err());
        assert!(transform("p", &Transform::Truncate(0)).is_err());
        assert!(transform("p", &Transform::Bucket(16)).is_ok());
        assert!(name("n", "").is_err() && name("n", &"x".repeat(2000)).is_err());
        // Deep nesting is refused before anything recurses over it.
        let mut deep = "int".to_string();
        for i in 0..34 {
            deep = format!(
                r#"{{"type":"struct","fields":[{{"id":{i},"name":"f","required":false,"type":{}}}]}}"#,
                if deep == "int" {
                    "\"int\"".to_string()
                } else {
                    deep
                }
            );
        }
        assert!(data_type("t", &parse_type(&deep).unwrap()).is_err());
    }
}
