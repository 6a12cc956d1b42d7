//! Named warehouses: creating, listing and dropping them (see [`crate::storage::registry`]
//! for how a table finds its warehouse).
//!
//! Contract:
//! - Only an `admin` of the catalog creates or drops a warehouse; any caller may list them
//!   (names, URLs and options, secrets shown as `***`), so a client can pick one.
//! - A warehouse is checked against its store before it is recorded, as `firn serve` checks
//!   its own at start: a wrong endpoint, bucket or key is refused with one line
//!   (`InvalidArgument` on `warehouse`, final) and nothing is recorded.
//! - A warehouse is recorded in the catalog database, so every replica finds it (on first
//!   use); one declared in a server's config file (passed to [`Catalog::open_in`]) lives in
//!   that server only, keys included, and cannot be dropped through the API. A replica
//!   keeps a dropped warehouse open until it restarts (its root stays reserved there).
//! - Drop refuses a warehouse a namespace is still bound to (`FailedPrecondition`); it
//!   deletes no object.

use tracing::info;

use super::Catalog;
use crate::auth::{Caller, Privilege, Resource};
use crate::error::{Error, ObjectKind, Result};
use crate::ident::validate_name;
use crate::model::{DEFAULT_WAREHOUSE, WarehouseInfo};
use crate::storage::access::StorageAccess;
use crate::storage::registry::Source;
use crate::storage::{Warehouse, WarehouseConfig};

impl Catalog {
    /// Checks `config` against its store and records it as warehouse `name`.
    pub async fn create_warehouse(
        &self,
        caller: &Caller,
        name: &str,
        config: WarehouseConfig,
    ) -> Result<WarehouseInfo> {
        caller.require(Privilege::Admin, &Resource::Catalog)?;
        // Every recorded warehouse is known here first, so overlaps are found.
        self.shared.load_warehouses().await?;
        let warehouse = self.shared.warehouses.open_checked(name, config).await?;
        // Recorded by its canonical root, so replicas compare roots as this one does.
        let recorded = WarehouseConfig {
            url: warehouse.root().to_string(),
            options: warehouse.config().options.clone(),
        };
        self.shared
            .db
            .create_warehouse(name, &recorded, warehouse.root_path(), self.now_ms())
            .await?;
        match self
            .shared
            .warehouses
            .insert(name, warehouse.clone(), Source::Catalog)
        {
            // Another request of this process loaded it from the row just written.
            Ok(()) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        info!(
            warehouse = name,
            root = warehouse.root(),
            "created warehouse"
        );
        Ok(info_of(name, &warehouse, Source::Catalog))
    }

    /// Every warehouse: the server's own (`default`) first, then the named ones by name.
    pub async fn list_warehouses(&self, _caller: &Caller) -> Result<Vec<WarehouseInfo>> {
        self.shared.load_warehouses().await?;
        Ok(self
            .shared
            .warehouses
            .list()
            .into_iter()
            .map(|(name, w, source)| info_of(&name, &w, source))
            .collect())
    }

    /// Forgets a warehouse recorded in the catalog; its objects stay. Refused for the
    /// server's own and config-declared ones, and while a namespace is bound to it.
    pub async fn drop_warehouse(&self, caller: &Caller, name: &str) -> Result<()> {
        caller.require(Privilege::Admin, &Resource::Catalog)?;
        validate_name("warehouse", name)?;
        match self.shared.warehouses.source(name) {
            Some(Source::Server) => {
                return Err(Error::FailedPrecondition(format!(
                    "warehouse {DEFAULT_WAREHOUSE} is the server's own (--warehouse); it cannot \
                     be dropped"
                )));
            }
            Some(Source::Config) => {
                return Err(Error::FailedPrecondition(format!(
                    "warehouse {name} is declared in the server's config file; remove it there"
                )));
            }
            Some(Source::Catalog) | None => {}
        }
        self.shared.db.drop_warehouse(name).await?;
        self.shared.warehouses.remove(name);
        info!(warehouse = name, "dropped warehouse");
        Ok(())
    }

    /// The name of the warehouse a client's `warehouse` setting means: empty is the
    /// server's own; else a warehouse's name, or its root URL. `NotFound` names the known
    /// ones.
    pub async fn resolve_warehouse(&self, name_or_url: &str) -> Result<String> {
        if name_or_url.is_empty() {
            return Ok(DEFAULT_WAREHOUSE.to_string());
        }
        if self.shared.warehouse_named(name_or_url).await.is_ok() {
            return Ok(name_or_url.to_string());
        }
        let as_root = crate::storage::Root::parse(name_or_url).map(|r| r.url());
        let all = self.shared.warehouses.list();
        if let Some((name, _, _)) = all
            .iter()
            .find(|(_, w, _)| as_root.as_deref().is_ok_and(|r| r == w.root()))
        {
            return Ok(name.clone());
        }
        let names: Vec<&str> = all.iter().map(|(n, _, _)| n.as_str()).collect();
        Err(Error::not_found(
            ObjectKind::Warehouse,
            format!("{name_or_url} (this server has {})", names.join(", ")),
        ))
    }

    /// Checks that `warehouse` exists and that `namespace`, if it exists, is bound to it: a
    /// client scoped to one warehouse (Iceberg REST's prefix) sees no other's namespaces.
    /// `NotFound` (for the warehouse, or the namespace "in" it) otherwise.
    pub async fn check_scope(&self, warehouse: &str, namespace: Option<&str>) -> Result<()> {
        self.shared.warehouse_named(warehouse).await?;
        let Some(ns) = namespace else {
            return Ok(());
        };
        match self.shared.db.get_namespace(ns).await {
            Ok(info) if info.warehouse != warehouse => Err(Error::not_found(
                ObjectKind::Namespace,
                format!("{ns} in warehouse {warehouse}"),
            )),
            // A missing namespace is the handler's to report.
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The root URL of warehouse `name` and what a client needs to reach its store (no
    /// credentials).
    pub async fn warehouse_access(&self, name: &str) -> Result<(String, StorageAccess)> {
        let w = self.shared.warehouse_named(name).await?;
        Ok((w.root().to_string(), w.client_access("")))
    }

    /// What a client needs to reach the store holding `location` (no credentials).
    pub async fn client_access(&self, location: &str) -> Result<StorageAccess> {
        Ok(self
            .shared
            .warehouse_of(location)
            .await?
            .client_access(location))
    }
}

fn info_of(name: &str, w: &Warehouse, source: Source) -> WarehouseInfo {
    let config = w.config();
    WarehouseInfo {
        name: name.to_string(),
        url: crate::auth::redact_url(&config.url),
        options: crate::auth::redact_settings(&config.options),
        source: source.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replicas_cannot_record_nesting_roots_even_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, _, _) = crate::testing::catalog_with_table(dir.path()).await;
        let admin = Caller::unrestricted();
        let lake = format!("file://{}", dir.path().join("lake").display());
        let w = catalog
            .create_warehouse(&admin, "lake", WarehouseConfig::new(&lake))
            .await
            .unwrap();
        assert_eq!(w.source, "catalog");
        // Another replica that has not loaded "lake" yet still cannot record a root inside it:
        // the database check decides, under its lock.
        let db = &catalog.shared.db;
        let inner = crate::storage::Root::parse(&format!("{lake}/inner")).unwrap();
        let e = db
            .create_warehouse("inner", &WarehouseConfig::new(inner.url()), &inner, 0)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("overlaps warehouse lake"), "{e}");
        let outer = crate::storage::Root::parse(&format!("file://{}", dir.path().display()));
        let outer = outer.unwrap();
        let e = db
            .create_warehouse("outer", &WarehouseConfig::new(outer.url()), &outer, 0)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
        let recorded = db.list_warehouses().await.unwrap();
        assert_eq!(recorded.len(), 1);
        assert!(recorded[0].1.url.ends_with("/lake/"), "{:?}", recorded[0]);
        // A namespace bound to it says so; clients name it by name or root URL.
        catalog
            .create_namespace_in(&admin, "far", "lake", Default::default())
            .await
            .unwrap();
        let ns = catalog.get_namespace(&admin, "far").await.unwrap();
        assert_eq!(ns.warehouse, "lake");
        assert_eq!(catalog.resolve_warehouse(&lake).await.unwrap(), "lake");
        assert_eq!(
            catalog.resolve_warehouse("").await.unwrap(),
            DEFAULT_WAREHOUSE
        );
        let e = catalog.resolve_warehouse("nope").await.unwrap_err();
        assert!(e.to_string().contains("default, lake"), "{e}");
        // A warehouse another replica dropped is refused for a new namespace, though this
        // one still has it open: the database decides.
        catalog
            .create_warehouse(&admin, "gone", WarehouseConfig::new("memory:///gone"))
            .await
            .unwrap();
        db.drop_warehouse("gone").await.unwrap();
        let e = catalog
            .create_namespace_in(&admin, "late", "gone", Default::default())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        assert!(catalog.get_namespace(&admin, "late").await.is_err());
        let e = db.drop_warehouse("lake").await.unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    }
}
