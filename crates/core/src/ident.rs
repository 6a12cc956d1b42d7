//! Names of namespaces and tables.

use std::fmt;

use crate::error::{Error, Result};

/// Longest accepted namespace or table name.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a namespace or table name: 1..=255 characters of `[A-Za-z0-9_-]`, not starting
/// with `-`. Names end up in object-store paths and SQL, so nothing else is let through.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!("{} characters is longer than {MAX_NAME_LEN}", name.len()),
        ));
    }
    if name.starts_with('-') {
        return Err(Error::invalid(
            field,
            format!("{name:?} must not start with '-'"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(Error::invalid(
            field,
            format!("{name:?} contains {c:?}; use letters, digits, '_' and '-'"),
        ));
    }
    Ok(())
}

/// A table's identity: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableIdent {
    pub namespace: String,
    pub name: String,
}

impl TableIdent {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Validates both parts.
    pub fn validate(&self) -> Result<()> {
        validate_name("namespace", &self.namespace)?;
        validate_name("table name", &self.name)
    }

    /// Parses `ns.table`.
    pub fn parse(s: &str) -> Result<Self> {
        let (ns, name) = s.split_once('.').ok_or_else(|| {
            Error::invalid("table", format!("{s:?} is not of the form NAMESPACE.TABLE"))
        })?;
        let ident = Self::new(ns, name);
        ident.validate()?;
        Ok(ident)
    }
}

impl fmt::Display for TableIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("n", "sales_2026-q1").is_ok());
        for bad in ["", "-x", "a.b", "a/b", "a b", "ü", &"x".repeat(256)] {
            assert!(validate_name("n", bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            TableIdent::parse("ns.t").unwrap(),
            TableIdent::new("ns", "t")
        );
        assert!(TableIdent::parse("nst").is_err());
        assert!(TableIdent::parse("ns.t.x").is_err());
    }
}
