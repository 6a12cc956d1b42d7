//! The warehouses of one catalog: the server's configured (default) warehouse and any named
//! ones (`firn warehouse create`, or declared in the server's config file).
//!
//! Contract:
//! - No two warehouses' roots are equal or nested, so every object URI belongs to at most
//!   one warehouse ([`Warehouses::of`]), and a table's warehouse is the one holding its
//!   location. Whoever acts on a table resolves its warehouse once and reads, writes and
//!   deletes through that one only: an object outside it is refused like any object outside
//!   the table.
//! - Write-behind is per warehouse (each stages its own objects); the aggregate calls here
//!   ([`Warehouses::publish`], [`Warehouses::staged_size`], ...) span all of them.
//!
//! Errors: [`Warehouses::insert`] refuses a taken name or an overlapping root with
//! `AlreadyExists` / `InvalidArgument` (final).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::{Published, Warehouse, WarehouseConfig};
use crate::error::{Error, ObjectKind, Result};
use crate::model::DEFAULT_WAREHOUSE;

/// Names a warehouse may not have: the first path segments of Iceberg REST routes, which
/// an unprefixed request has where a prefixed one has the warehouse's name.
pub const RESERVED_NAMES: [&str; 6] = [
    "config",
    "namespaces",
    "tables",
    "transactions",
    "oauth",
    "views",
];

/// The refusal of a warehouse at `root` that nests with warehouse `other` at `other_root`.
pub(crate) fn overlap(root: &str, other: &str, other_root: &str) -> Error {
    Error::invalid(
        "url",
        format!(
            "{root} overlaps warehouse {other} at {other_root}: warehouses never share objects"
        ),
    )
}

/// Checks a new warehouse's name: a valid name, not reserved.
pub fn validate_warehouse_name(name: &str) -> Result<()> {
    crate::ident::validate_name("warehouse", name)?;
    if RESERVED_NAMES.contains(&name) {
        return Err(Error::invalid(
            "warehouse",
            format!("{name} is reserved (a route of the Iceberg REST API); choose another name"),
        ));
    }
    Ok(())
}

/// Where a named warehouse was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `firn serve --warehouse`: the default.
    Server,
    /// Recorded in the catalog database (`firn warehouse create`): every replica sees it.
    Catalog,
    /// Declared in this server's config file (its keys stay out of the database).
    Config,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Server => "server",
            Source::Catalog => "catalog",
            Source::Config => "config",
        }
    }
}

/// The default warehouse and the named ones, by name.
#[derive(Debug)]
pub struct Warehouses {
    default: Arc<Warehouse>,
    named: RwLock<BTreeMap<String, (Arc<Warehouse>, Source)>>,
}

impl Warehouses {
    pub fn new(default: Arc<Warehouse>) -> Self {
        Self {
            default,
            named: RwLock::new(BTreeMap::new()),
        }
    }

    /// The server's configured warehouse.
    pub fn default_warehouse(&self) -> &Arc<Warehouse> {
        &self.default
    }

    /// The warehouse called `name` ([`DEFAULT_WAREHOUSE`] is the configured one).
    pub fn get(&self, name: &str) -> Option<Arc<Warehouse>> {
        if name == DEFAULT_WAREHOUSE {
            return Some(self.default.clone());
        }
        let named = self.named.read().expect("poisoned");
        named.get(name).map(|(w, _)| w.clone())
    }

    /// The warehouse whose root holds `uri`, if any.
    pub fn of(&self, uri: &str) -> Option<Arc<Warehouse>> {
        if self.default.holds(uri) {
            return Some(self.default.clone());
        }
        let named = self.named.read().expect("poisoned");
        named
            .values()
            .find(|(w, _)| w.holds(uri))
            .map(|(w, _)| w.clone())
    }

    /// The name of the warehouse holding `uri`, if any.
    pub fn name_of(&self, uri: &str) -> Option<String> {
        self.list()
            .into_iter()
            .find(|(_, w, _)| w.holds(uri))
            .map(|(n, _, _)| n)
    }

    /// Every warehouse with its name and source, the default first.
    pub fn list(&self) -> Vec<(String, Arc<Warehouse>, Source)> {
        let named = self.named.read().expect("poisoned");
        std::iter::once((
            DEFAULT_WAREHOUSE.to_string(),
            self.default.clone(),
            Source::Server,
        ))
        .chain(named.iter().map(|(n, (w, s))| (n.clone(), w.clone(), *s)))
        .collect()
    }

    /// Every warehouse, the default first.
    pub fn all(&self) -> Vec<Arc<Warehouse>> {
        self.list().into_iter().map(|(_, w, _)| w).collect()
    }

    /// Whether `name` is known, and where it came from.
    pub fn source(&self, name: &str) -> Option<Source> {
        if name == DEFAULT_WAREHOUSE {
            return Some(Source::Server);
        }
        let named = self.named.read().expect("poisoned");
        named.get(name).map(|(_, s)| *s)
    }

    /// Whether `warehouse` could be added as `name`: refuses a name already taken
    /// (`AlreadyExists`) and a root equal to, inside or around another warehouse's
    /// (`InvalidArgument`).
    pub fn admits(&self, name: &str, warehouse: &Warehouse) -> Result<()> {
        let named = self.named.read().expect("poisoned");
        self.refuse_clash(&named, name, warehouse)
    }

    fn refuse_clash(
        &self,
        named: &BTreeMap<String, (Arc<Warehouse>, Source)>,
        name: &str,
        warehouse: &Warehouse,
    ) -> Result<()> {
        if name == DEFAULT_WAREHOUSE || named.contains_key(name) {
            return Err(Error::AlreadyExists {
                kind: ObjectKind::Warehouse,
                name: name.to_string(),
            });
        }
        let clash = std::iter::once((DEFAULT_WAREHOUSE, &self.default))
            .chain(named.iter().map(|(n, (w, _))| (n.as_str(), w)))
            .find(|(_, w)| w.root_path().overlaps(warehouse.root_path()));
        match clash {
            Some((other, w)) => Err(overlap(warehouse.root(), other, w.root())),
            None => Ok(()),
        }
    }

    /// Adds a named warehouse, if [`Warehouses::admits`] it.
    pub fn insert(&self, name: &str, warehouse: Arc<Warehouse>, source: Source) -> Result<()> {
        let mut named = self.named.write().expect("poisoned");
        self.refuse_clash(&named, name, &warehouse)?;
        named.insert(name.to_string(), (warehouse, source));
        Ok(())
    }

    /// Opens warehouse `name` as `config` says and checks it against its store
    /// ([`Warehouse::check`]), once [`Warehouses::admits`] it: a name taken or an overlapping
    /// root is refused before any request. Not added: the caller records it first.
    pub async fn open_checked(
        &self,
        name: &str,
        config: WarehouseConfig,
    ) -> Result<Arc<Warehouse>> {
        validate_warehouse_name(name)?;
        let warehouse = Arc::new(Warehouse::open(config)?);
        self.admits(name, &warehouse)?;
        warehouse.check().await?;
        Ok(warehouse)
    }

    /// Forgets a named warehouse (its objects stay where they are).
    pub fn remove(&self, name: &str) {
        self.named.write().expect("poisoned").remove(name);
    }

    // ---- write-behind, over every warehouse --------------------------------------------

    /// `f` of every warehouse, the default first, without copying the list (the commit
    /// path asks these on every batch).
    fn fold<T>(&self, init: T, mut f: impl FnMut(T, &Warehouse) -> T) -> T {
        let named = self.named.read().expect("poisoned");
        let acc = f(init, &self.default);
        named.values().fold(acc, |acc, (w, _)| f(acc, w))
    }

    /// Whether any warehouse stages objects (local disk).
    pub fn needs_sync(&self) -> bool {
        self.fold(false, |any, w| any || w.needs_sync())
    }

    /// Bytes staged and not yet published, in all.
    pub fn staged_size(&self) -> u64 {
        self.fold(0, |n, w| n + w.staged_size())
    }

    /// Whether `uri` is not yet durable in its warehouse ([`Warehouse::is_unsynced`]).
    pub fn is_unsynced(&self, uri: &str) -> bool {
        self.of(uri).is_some_and(|w| w.is_unsynced(uri))
    }

    /// Every staged object's URI.
    pub fn staged_all(&self) -> Vec<String> {
        self.all().iter().flat_map(|w| w.staged_all()).collect()
    }

    /// Paths of staged objects deleted before they were published, since the last call.
    pub fn take_released(&self) -> Vec<String> {
        self.all().iter().flat_map(|w| w.take_released()).collect()
    }

    /// [`Warehouse::publish`] of each URI in its own warehouse (and of what each exposed
    /// before); URIs in none are skipped (nothing is staged for them).
    pub async fn publish(&self, uris: &[String]) -> Published {
        let mut out = Published::default();
        for w in self.all() {
            if !w.needs_sync() {
                continue;
            }
            let mine: Vec<String> = uris.iter().filter(|u| w.holds(u)).cloned().collect();
            if mine.is_empty() && !w.has_exposed() {
                continue;
            }
            let p = w.publish(&mine).await;
            out.written.extend(p.written);
            if p.error.is_some() {
                out.error = p.error;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::WarehouseConfig;

    fn open(url: &str) -> Arc<Warehouse> {
        Arc::new(Warehouse::open(WarehouseConfig::new(url)).unwrap())
    }

    #[test]
    fn each_uri_belongs_to_the_warehouse_holding_it() {
        let all = Warehouses::new(open("memory:///w"));
        all.insert("b", open("memory:///b"), Source::Catalog)
            .unwrap();
        assert_eq!(all.of("memory:///w/ns/t/x").unwrap().root(), "memory:///w/");
        assert_eq!(all.of("memory:///b/ns/t/x").unwrap().root(), "memory:///b/");
        assert!(all.of("memory:///c/ns/t").is_none());
        assert!(
            all.of("memory:///w").is_none(),
            "the root itself is no object"
        );
        assert_eq!(all.get("b").unwrap().root(), "memory:///b/");
        assert_eq!(all.get(DEFAULT_WAREHOUSE).unwrap().root(), "memory:///w/");
        assert!(all.get("c").is_none());
        let names: Vec<String> = all.list().into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names, ["default", "b"]);
        all.remove("b");
        assert!(all.of("memory:///b/ns/t/x").is_none());
    }

    #[test]
    fn roots_never_nest_and_names_are_unique() {
        let all = Warehouses::new(open("memory:///w/x"));
        for bad in ["memory:///w", "memory:///w/x", "memory:///w/x/y"] {
            let e = all
                .insert("n", open(bad), Source::Catalog)
                .unwrap_err()
                .to_string();
            assert!(e.contains("overlaps warehouse default"), "{bad}: {e}");
        }
        all.insert("n", open("memory:///w/xy"), Source::Catalog)
            .unwrap();
        for name in ["n", DEFAULT_WAREHOUSE] {
            let e = all.insert(name, open("memory:///z"), Source::Catalog);
            assert!(matches!(e, Err(Error::AlreadyExists { .. })), "{name}");
        }
        let e = all
            .insert("m", open("memory:///w/xy/deeper"), Source::Config)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps warehouse n"), "{e}");
        assert_eq!(all.source("n"), Some(Source::Catalog));
    }
}
