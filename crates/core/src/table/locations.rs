//! Where tables live, and what a table may delete.
//!
//! Contract:
//! - Every table has one location: a directory strictly below the warehouse root, in
//!   canonical spelling. No two tables' locations are equal or nested, and no table's
//!   location is or contains a namespace's default directory (`<root>/<namespace>`) or the
//!   root itself. The check and the insert of the table row happen in ONE transaction that
//!   holds the catalog's location lock, so concurrent creates cannot slip past each other.
//! - A table owns the objects under its location, and under its `write.data.path` /
//!   `write.metadata.path` when those lie in the warehouse and overlap no other table. Only
//!   owned objects are ever deleted on its behalf ([`TableScope`]): a table registered from
//!   metadata that references objects elsewhere reads them, but never deletes them.
//!
//! Errors: `InvalidArgument` (a location outside the warehouse, unparseable, or overlapping
//! another table or namespace: final); database errors are `Unavailable`.

use std::collections::HashMap;

use crate::db::TableRow;
use crate::error::{Error, Result};
use crate::storage::{Location, TableScope, Warehouse};

/// The table properties naming directories a table writes to besides its location.
pub const DIRECTORY_PROPERTIES: [&str; 2] = ["write.data.path", "write.metadata.path"];

/// Refuses `new` when it overlaps a table location in `tables` or is (or contains) a
/// namespace directory in `namespaces`.
pub(crate) fn check_free(
    warehouse: &Warehouse,
    field: &str,
    new: &Location,
    tables: &[(String, String)],
    namespaces: &[String],
) -> Result<()> {
    for (name, loc) in tables {
        let Ok(other) = warehouse.location("location", loc) else {
            continue;
        };
        if new.overlaps(&other) {
            let how = if new == &other {
                "is the location of"
            } else if other.contains(new) {
                "is inside the location of"
            } else {
                "contains the location of"
            };
            return Err(Error::invalid(
                field,
                format!("{new} {how} table {name} ({other}); tables never share files"),
            ));
        }
    }
    for ns in namespaces {
        if let Ok(dir) = warehouse.location("location", &format!("{}{ns}", warehouse.root()))
            && (new == &dir || new.contains(&dir))
        {
            return Err(Error::invalid(
                field,
                format!("{new} contains the directory of namespace {ns} ({dir})"),
            ));
        }
    }
    Ok(())
}

/// What a table owns: its location, plus its extra write directories when they are in the
/// warehouse and overlap no other table (`others`: the other tables' locations).
pub(crate) fn scope(
    warehouse: &Warehouse,
    location: &str,
    properties: Option<&HashMap<String, String>>,
    others: &[String],
) -> Result<TableScope> {
    let own = warehouse.location("location", location)?;
    let others: Vec<Location> = others
        .iter()
        .filter_map(|l| warehouse.location("location", l).ok())
        .filter(|l| l != &own)
        .collect();
    let extra = DIRECTORY_PROPERTIES
        .iter()
        .filter_map(|k| properties?.get(*k))
        .filter_map(|dir| warehouse.location(DIRECTORY_PROPERTIES[0], dir).ok())
        .filter(|dir| !others.iter().any(|o| o.overlaps(dir)))
        .collect::<Vec<_>>();
    Ok(TableScope::new(own, extra))
}

/// The properties of a table row's stored metadata, and whether they name extra write
/// directories (then the caller passes the other tables' locations to [`scope`]).
pub(crate) fn row_properties(row: &TableRow) -> (Option<HashMap<String, String>>, bool) {
    let props: Option<HashMap<String, String>> =
        serde_json::from_str::<serde_json::Value>(&row.base_metadata)
            .ok()
            .and_then(|v| serde_json::from_value(v["properties"].clone()).ok());
    let extra = props
        .as_ref()
        .is_some_and(|p| DIRECTORY_PROPERTIES.iter().any(|k| p.contains_key(*k)));
    (props, extra)
}

/// Takes the catalog's location lock for the rest of `tx` and refuses `new` if it overlaps
/// any table or namespace directory (see the module contract).
pub(crate) async fn claim(
    tx: &mut sqlx::AnyConnection,
    warehouse: &Warehouse,
    field: &str,
    new: &Location,
) -> Result<()> {
    sqlx::query("UPDATE catalog_locks SET n = n + 1 WHERE name = 'locations'")
        .execute(&mut *tx)
        .await?;
    check(tx, warehouse, field, new).await
}

/// Refuses `new` if it overlaps a table or namespace directory now, without the lock: an
/// early answer before anything is written (only [`claim`] decides, in the transaction that
/// inserts the table).
pub(crate) async fn check(
    conn: &mut sqlx::AnyConnection,
    warehouse: &Warehouse,
    field: &str,
    new: &Location,
) -> Result<()> {
    use sqlx::Row;
    let tables = sqlx::query("SELECT namespace, name, location FROM tables")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok((
                format!(
                    "{}.{}",
                    r.try_get::<String, _>(0)?,
                    r.try_get::<String, _>(1)?
                ),
                r.try_get::<String, _>(2)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let namespaces = sqlx::query("SELECT name FROM namespaces")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| Ok(r.try_get::<String, _>(0)?))
        .collect::<Result<Vec<_>>>()?;
    check_free(warehouse, field, new, &tables, &namespaces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::WarehouseConfig;

    #[test]
    fn locations_may_not_overlap_tables_or_namespaces() {
        let w = Warehouse::open(WarehouseConfig::new("memory:///w")).unwrap();
        let tables = vec![("ns.a".to_string(), "memory:///w/ns/a".to_string())];
        let ns = vec!["ns".to_string(), "other".to_string()];
        let check = |l: &str| {
            let l = w.location("location", l).unwrap();
            check_free(&w, "location", &l, &tables, &ns)
        };
        assert!(check("memory:///w/ns/b").is_ok());
        assert!(check("memory:///w/ns/ab").is_ok());
        for bad in [
            "memory:///w/ns/a",
            "memory:///w/ns/a/",
            "memory:///w/ns/a/data/sub",
            "memory:///w/ns",
            "memory:///w/other",
        ] {
            let e = check(bad).unwrap_err().to_string();
            assert!(e.contains("ns") || e.contains("other"), "{bad}: {e}");
        }
        assert!(w.location("location", "memory:///w").is_err());
    }

    #[test]
    fn extra_directories_count_only_inside_the_warehouse_and_no_other_table() {
        let w = Warehouse::open(WarehouseConfig::new("memory:///w")).unwrap();
        let props = |d: &str| {
            std::collections::HashMap::from([("write.data.path".to_string(), d.to_string())])
        };
        let others = vec!["memory:///w/ns/b".to_string()];
        let o = |s: &str| w.object(s).unwrap();
        let s = scope(
            &w,
            "memory:///w/ns/a",
            Some(&props("memory:///w/data/a")),
            &others,
        )
        .unwrap();
        assert!(s.owns(&o("memory:///w/data/a/f.parquet")));
        assert!(s.owns(&o("memory:///w/ns/a/f.parquet")));
        assert!(!s.owns(&o("memory:///w/ns/b/f.parquet")));
        for bad in ["memory:///w/ns/b/data", "memory:///w/ns", "memory:///x/y"] {
            let s = scope(&w, "memory:///w/ns/a", Some(&props(bad)), &others).unwrap();
            assert_eq!(s.dirs().len(), 1, "{bad}");
        }
    }
}
