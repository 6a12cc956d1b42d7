//! Firn namespaces and tables as a DataFusion catalog: namespaces are schemas, tables are
//! [`FirnTable`]s resolved to their current snapshot when a statement is planned (so
//! tables created and commits made by others are visible to the next statement).
//! `"t$snapshots"` and the other metadata tables are resolved here too.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::Result as DfResult;
use firn_client::{ClientError, FirnClient, TableIdent};

use crate::error::{Result, external};
use crate::meta::{self, MetadataKind};
use crate::table::FirnTable;
use crate::travel::Versions;

/// Names of namespaces and their tables, as of the last refresh.
type Listing = BTreeMap<String, Vec<String>>;

/// The catalog of one Firn server.
#[derive(Debug)]
pub struct FirnCatalog {
    client: FirnClient,
    listing: Arc<RwLock<Listing>>,
    versions: Versions,
}

impl FirnCatalog {
    /// A catalog whose statements' versioned tables `versions` resolves.
    pub fn new(client: FirnClient, versions: Versions) -> Self {
        Self {
            client,
            listing: Arc::default(),
            versions,
        }
    }

    /// Re-reads the namespace and table names (for `SHOW TABLES`, `information_schema`).
    pub async fn refresh(&self) -> Result<()> {
        let mut listing = Listing::new();
        for ns in self.client.list_namespaces().await? {
            let tables = self.client.list_tables(&ns.name).await?;
            listing.insert(ns.name, tables.into_iter().map(|t| t.name).collect());
        }
        *self.listing.write().expect("poisoned") = listing;
        Ok(())
    }
}

impl CatalogProvider for FirnCatalog {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        self.listing
            .read()
            .expect("poisoned")
            .keys()
            .cloned()
            .collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        // Any name: a namespace created since the last refresh is still found, and an
        // unknown one reports its tables as missing.
        Some(Arc::new(FirnSchema {
            client: self.client.clone(),
            namespace: name.to_string(),
            listing: self.listing.clone(),
            versions: self.versions.clone(),
        }))
    }
}

/// One namespace.
#[derive(Debug)]
pub struct FirnSchema {
    client: FirnClient,
    namespace: String,
    listing: Arc<RwLock<Listing>>,
    versions: Versions,
}

/// Whether a server error means "there is no such table".
fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Status(s) if s.code() == tonic::Code::NotFound)
}

#[async_trait]
impl SchemaProvider for FirnSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.listing
            .read()
            .expect("poisoned")
            .get(&self.namespace)
            .cloned()
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let (base, kind) = match name.split_once('$') {
            Some((base, suffix)) => match MetadataKind::parse(suffix) {
                Some(kind) => (base, Some(kind)),
                None => {
                    return Err(external(crate::QueryError::Invalid(format!(
                        "{name}: unknown metadata table ${suffix}; there are {}",
                        MetadataKind::names()
                    ))));
                }
            },
            None => (name, None),
        };
        let ident = TableIdent::new(self.namespace.clone(), base.to_string());
        if ident.validate().is_err() {
            return Ok(None);
        }
        if kind.is_none() && self.versions.versioned_only(&ident) {
            // Planned from the snapshots the statement names; nothing to load here.
            return Ok(None);
        }
        let result = match kind {
            None => FirnTable::resolve(&self.client, &ident, None)
                .await
                .map(|t| Arc::new(t) as Arc<dyn TableProvider>),
            Some(kind) => meta::table(&self.client, &ident, kind).await,
        };
        match result {
            Ok(t) => Ok(Some(t)),
            Err(crate::QueryError::Server(e)) if is_not_found(&e) => Ok(None),
            Err(e) => Err(external(e)),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.table_names().iter().any(|t| t == name)
    }
}
