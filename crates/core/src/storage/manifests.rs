//! Reading Iceberg manifests and manifest lists, whoever wrote them.
//!
//! Contract: a manifest is read with the table's own schema and the partition spec its
//! manifest-list entry names, as Java Iceberg reads one; the optional `schema` and
//! `partition-spec` key-value headers of the Avro file are not trusted (DuckDB 1.4 writes its
//! manifest-entry schema there, others leave them out). Parsed entries are cached by path:
//! manifests are immutable. An object that is missing or does not parse is
//! `Error::Corrupt`, naming it.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use apache_avro::types::Value as AvroValue;
use apache_avro::{Schema as AvroSchema, from_avro_datum, to_avro_datum};
use iceberg::spec::{
    FormatVersion, Manifest, ManifestContentType, ManifestEntry, ManifestFile, ManifestList,
    SchemaRef, TableMetadata,
};

use crate::error::{Error, Result};
use crate::storage::Warehouse;

/// Parsed manifests and manifest lists, by path. Both are immutable, so entries never go
/// stale. Each kind is kept in two generations: when the young one is full it becomes the
/// old one, so a manifest survives at least [`MANIFEST_CACHE_GENERATION`] later inserts
/// (the committer relies on that for manifests it has planned but not yet written).
#[derive(Default)]
pub(crate) struct ManifestCache {
    manifests: Mutex<Generations<Arc<Vec<ManifestEntry>>>>,
    /// Manifest lists with their sizes in bytes, weighed by their entries (maintenance
    /// reads every list of a table's history, run after run).
    lists: Mutex<Generations<(Arc<ManifestList>, u64)>>,
}

const MANIFEST_CACHE_GENERATION: usize = 8192;
/// Manifest-list entries a generation of the list cache holds (some 25 MB).
const LIST_CACHE_GENERATION: usize = 65_536;

/// Two generations of a cache, each holding up to a weight.
struct Generations<V> {
    young: HashMap<String, V>,
    old: HashMap<String, V>,
    weight: usize,
}

impl<V> Default for Generations<V> {
    fn default() -> Self {
        Generations {
            young: HashMap::new(),
            old: HashMap::new(),
            weight: 0,
        }
    }
}

impl<V: Clone> Generations<V> {
    fn insert(&mut self, key: &str, value: V, weight: usize, limit: usize) {
        if self.weight + weight > limit && !self.young.is_empty() {
            self.old = std::mem::take(&mut self.young);
            self.weight = 0;
        }
        self.weight += weight;
        self.young.insert(key.to_string(), value);
    }

    fn get(&self, key: &str) -> Option<V> {
        self.young.get(key).or_else(|| self.old.get(key)).cloned()
    }
}

impl ManifestCache {
    pub(crate) fn insert(
        &self,
        path: &str,
        entries: Vec<ManifestEntry>,
    ) -> Arc<Vec<ManifestEntry>> {
        let entries = Arc::new(entries);
        let mut g = self.manifests.lock().expect("cache poisoned");
        g.insert(path, entries.clone(), 1, MANIFEST_CACHE_GENERATION);
        entries
    }

    fn cached(&self, path: &str) -> Option<Arc<Vec<ManifestEntry>>> {
        self.manifests.lock().expect("cache poisoned").get(path)
    }

    /// The manifest list at `path` and its size in bytes (see [`read_manifest_list_sized`]),
    /// from the cache when it was read before.
    pub(crate) async fn list(
        &self,
        warehouse: &Warehouse,
        path: &str,
    ) -> Result<(Arc<ManifestList>, u64)> {
        if let Some(hit) = self.lists.lock().expect("cache poisoned").get(path) {
            return Ok(hit);
        }
        let (list, size) = read_manifest_list_sized(warehouse, path).await?;
        let weight = list.entries().len().max(1);
        let list = (Arc::new(list), size);
        let mut g = self.lists.lock().expect("cache poisoned");
        g.insert(path, list.clone(), weight, LIST_CACHE_GENERATION);
        Ok(list)
    }

    /// The entries of the manifest `listed` names, read with `table`'s schema and the
    /// partition spec `listed` gives (see [`parse_manifest`]).
    pub(crate) async fn get(
        &self,
        warehouse: &Warehouse,
        table: &TableMetadata,
        listed: &ManifestFile,
    ) -> Result<Arc<Vec<ManifestEntry>>> {
        let path = listed.manifest_path.as_str();
        if let Some(e) = self.cached(path) {
            return Ok(e);
        }
        let object = warehouse.object_in("manifest", path)?;
        let bytes = match warehouse.get(&object).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => {
                return Err(Error::corrupt(path, "the manifest does not exist"));
            }
            Err(e) => return Err(e),
        };
        let manifest = parse_manifest(&bytes, table, Some(listed))
            .map_err(|e| Error::corrupt(path, format!("not an Iceberg manifest: {e}")))?;
        let (entries, _) = manifest.into_parts();
        Ok(self.insert(path, entries.into_iter().map(|e| (*e).clone()).collect()))
    }
}

impl ManifestCache {
    /// The paths of the files a manifest holds live (added or existing).
    pub(crate) async fn live_paths(
        &self,
        warehouse: &Warehouse,
        table: &TableMetadata,
        listed: &ManifestFile,
    ) -> Result<Vec<String>> {
        Ok(self
            .get(warehouse, table, listed)
            .await?
            .iter()
            .filter(|e| e.status() != iceberg::spec::ManifestStatus::Deleted)
            .map(|e| e.file_path().to_string())
            .collect())
    }
}

/// Reads and parses a manifest list (one GET).
pub(crate) async fn read_manifest_list(warehouse: &Warehouse, path: &str) -> Result<ManifestList> {
    Ok(read_manifest_list_sized(warehouse, path).await?.0)
}

/// [`read_manifest_list`], with the size of the object in bytes.
async fn read_manifest_list_sized(
    warehouse: &Warehouse,
    path: &str,
) -> Result<(ManifestList, u64)> {
    let object = warehouse.object_in("manifest-list", path)?;
    let bytes = match warehouse.get(&object).await {
        Err(Error::NotFound { .. }) => {
            return Err(Error::corrupt(path, "the manifest list does not exist"));
        }
        r => r?,
    };
    let list = ManifestList::parse_with_version(&bytes, FormatVersion::V2)
        .map_err(|e| Error::corrupt(path, format!("not an Iceberg manifest list: {e}")))?;
    Ok((list, bytes.len() as u64))
}

/// The magic bytes of an Avro object container file.
const AVRO_MAGIC: [u8; 4] = *b"Obj\x01";

fn avro_err(e: impl std::fmt::Display) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::DataInvalid, e.to_string())
}

/// Edits the key-value metadata of an Avro object container file. Only the header map is
/// decoded and encoded again; the sync marker and every data block are copied as they are
/// (blocks hold no offsets, so a header of another length is fine).
fn edit_avro_metadata(
    bytes: &[u8],
    edit: impl FnOnce(&mut HashMap<String, AvroValue>) -> iceberg::Result<()>,
) -> iceberg::Result<Vec<u8>> {
    if bytes.len() < AVRO_MAGIC.len() || bytes[..AVRO_MAGIC.len()] != AVRO_MAGIC {
        return Err(avro_err("not an Avro object container file"));
    }
    let map_schema = AvroSchema::map(AvroSchema::Bytes);
    let mut rest = Cursor::new(&bytes[AVRO_MAGIC.len()..]);
    let AvroValue::Map(mut meta) =
        from_avro_datum(&map_schema, &mut rest, None).map_err(avro_err)?
    else {
        return Err(avro_err("the Avro file metadata is not a map"));
    };
    let body = &bytes[AVRO_MAGIC.len() + rest.position() as usize..];
    edit(&mut meta)?;
    let header = to_avro_datum(&map_schema, AvroValue::Map(meta)).map_err(avro_err)?;
    let mut out = Vec::with_capacity(AVRO_MAGIC.len() + header.len() + body.len());
    out.extend_from_slice(&AVRO_MAGIC);
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    Ok(out)
}

fn header_str<'a>(meta: &'a HashMap<String, AvroValue>, key: &str) -> Option<&'a str> {
    match meta.get(key)? {
        AvroValue::Bytes(b) => std::str::from_utf8(b).ok().map(str::trim),
        AvroValue::String(s) => Some(s.trim()),
        _ => None,
    }
}

/// Parses a manifest with the table's schema and partition spec, whatever the manifest's
/// own `schema` / `partition-spec` headers hold. `listed` is the manifest's entry in a
/// manifest list; its partition spec id and content win over the headers.
pub fn parse_manifest(
    bytes: &[u8],
    table: &TableMetadata,
    listed: Option<&ManifestFile>,
) -> iceberg::Result<Manifest> {
    let fixed = edit_avro_metadata(bytes, |meta| fix_manifest_header(meta, table, listed))?;
    Manifest::parse_avro(&fixed)
}

fn fix_manifest_header(
    meta: &mut HashMap<String, AvroValue>,
    table: &TableMetadata,
    listed: Option<&ManifestFile>,
) -> iceberg::Result<()> {
    let int = |key: &str| header_str(meta, key).and_then(|s| s.parse::<i32>().ok());
    // The spec: the manifest list's id (as Java reads it), else the header's, else 0.
    let spec_id = listed
        .map(|m| m.partition_spec_id)
        .or_else(|| int("partition-spec-id"))
        .unwrap_or(0);
    let spec = table.partition_spec_by_id(spec_id).ok_or_else(|| {
        avro_err(format!(
            "the manifest's partition spec {spec_id} is not in the table metadata"
        ))
    })?;
    // The schema the header names when the table has it and the spec binds to it; else the
    // current one; else the newest the spec binds to.
    let binds = |s: &&SchemaRef| spec.partition_type(s).is_ok();
    let schema = int("schema-id")
        .and_then(|id| table.schema_by_id(id))
        .filter(binds)
        .or_else(|| Some(table.current_schema()).filter(binds))
        .or_else(|| {
            let mut all: Vec<&SchemaRef> = table.schemas_iter().collect();
            all.sort_by_key(|s| std::cmp::Reverse(s.schema_id()));
            all.into_iter().find(binds)
        })
        .ok_or_else(|| {
            avro_err(format!(
                "partition spec {spec_id} binds to no schema of the table"
            ))
        })?;
    // The header's format version when valid (a v1 manifest keeps its v1 layout).
    let format_version = match header_str(meta, "format-version") {
        Some("1") => FormatVersion::V1,
        Some("2") => FormatVersion::V2,
        _ => table.format_version(),
    };
    // The manifest list's content (DuckDB 1.4 writes "data" into delete manifests too).
    let content = listed
        .map(|m| m.content)
        .or_else(|| header_str(meta, "content").and_then(|s| s.parse::<ManifestContentType>().ok()))
        .unwrap_or(ManifestContentType::Data);
    // Avro fields are matched by name: a partition field the writer named otherwise would
    // silently read as null, so it is refused instead.
    if let Some(written) = writer_partition_names(meta) {
        let missing: Vec<&str> = spec
            .fields()
            .iter()
            .map(|f| f.name.as_str())
            .filter(|n| !written.iter().any(|w| w == n))
            .collect();
        if !missing.is_empty() {
            return Err(avro_err(format!(
                "the manifest's partition fields {written:?} lack {missing:?} of partition spec {spec_id}"
            )));
        }
    }
    let schema_json = serde_json::to_vec(&**schema).map_err(avro_err)?;
    let spec_json = serde_json::to_vec(spec.fields()).map_err(avro_err)?;
    for (key, value) in [
        ("schema", schema_json),
        ("schema-id", schema.schema_id().to_string().into_bytes()),
        ("partition-spec", spec_json),
        ("partition-spec-id", spec_id.to_string().into_bytes()),
        (
            "format-version",
            (format_version as u8).to_string().into_bytes(),
        ),
        ("content", content.to_string().into_bytes()),
    ] {
        meta.insert(key.to_string(), AvroValue::Bytes(value));
    }
    Ok(())
}

/// The field names of `data_file.partition` in the writer's Avro schema (`avro.schema`).
fn writer_partition_names(meta: &HashMap<String, AvroValue>) -> Option<Vec<String>> {
    use apache_avro::schema::RecordSchema;
    fn record(s: &AvroSchema) -> Option<&RecordSchema> {
        match s {
            AvroSchema::Record(r) => Some(r),
            AvroSchema::Union(u) => u.variants().iter().find_map(record),
            _ => None,
        }
    }
    fn field<'a>(r: &'a RecordSchema, name: &str) -> Option<&'a RecordSchema> {
        r.fields
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| record(&f.schema))
    }
    let AvroValue::Bytes(raw) = meta.get("avro.schema")? else {
        return None;
    };
    let schema = AvroSchema::parse_str(std::str::from_utf8(raw).ok()?).ok()?;
    let partition = field(field(record(&schema)?, "data_file")?, "partition")?;
    Some(partition.fields.iter().map(|f| f.name.clone()).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::Generations;

    #[test]
    fn a_generation_holds_up_to_its_weight_and_the_one_before_stays_readable() {
        let mut g: Generations<u32> = Generations::default();
        g.insert("a", 1, 6, 10);
        g.insert("b", 2, 4, 10);
        assert_eq!((g.get("a"), g.get("b")), (Some(1), Some(2)));
        // Over the limit: a and b become the old generation, still read.
        g.insert("c", 3, 1, 10);
        assert_eq!((g.get("a"), g.get("c")), (Some(1), Some(3)));
        // Another full turn forgets them.
        g.insert("d", 4, 10, 10);
        assert_eq!((g.get("a"), g.get("b")), (None, None));
        assert_eq!((g.get("c"), g.get("d")), (Some(3), Some(4)));
        // One entry heavier than the limit is still kept.
        g.insert("e", 5, 50, 10);
        assert_eq!(g.get("e"), Some(5));
    }

    use iceberg::io::FileIO;
    use iceberg::spec::*;

    use super::*;

    fn table(partitioned: bool) -> TableMetadata {
        table_with(partitioned.then_some("name_part"))
    }

    /// A table of `id long, name string`, partitioned by identity of `name` under the given
    /// partition field name, or unpartitioned.
    fn table_with(partition_field: Option<&str>) -> TableMetadata {
        let schema = Schema::builder()
            .with_fields(vec![
                Arc::new(NestedField::optional(
                    1,
                    "id",
                    Type::Primitive(PrimitiveType::Long),
                )),
                Arc::new(NestedField::optional(
                    2,
                    "name",
                    Type::Primitive(PrimitiveType::String),
                )),
            ])
            .build()
            .unwrap();
        let mut spec = UnboundPartitionSpec::builder();
        if let Some(name) = partition_field {
            spec = spec
                .add_partition_field(2, name, Transform::Identity)
                .unwrap();
        }
        TableMetadataBuilder::new(
            schema,
            spec.build(),
            SortOrder::unsorted_order(),
            "memory:///t".into(),
            FormatVersion::V2,
            HashMap::new(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata
    }

    async fn write(meta: &TableMetadata, n: usize) -> Vec<u8> {
        let io = FileIO::new_with_memory();
        let path = "memory:///t/metadata/m.avro";
        let spec = meta.default_partition_spec().as_ref().clone();
        let partitioned = !spec.fields().is_empty();
        let mut w = ManifestWriterBuilder::new(
            io.new_output(path).unwrap(),
            Some(7),
            meta.current_schema().clone(),
            spec,
        )
        .build_v2_data();
        for i in 0..n {
            let partition = if partitioned {
                Struct::from_iter([Some(Literal::string(format!("p{}", i % 3)))])
            } else {
                Struct::empty()
            };
            let f = DataFileBuilder::default()
                .content(DataContentType::Data)
                .file_path(format!("memory:///t/data/{i}.parquet"))
                .file_format(DataFileFormat::Parquet)
                .partition(partition)
                .partition_spec_id(meta.default_partition_spec_id())
                .record_count(10)
                .file_size_in_bytes(1000 + i as u64)
                .lower_bounds(HashMap::from([(1, Datum::long(i as i64))]))
                .upper_bounds(HashMap::from([(1, Datum::long(i as i64 + 9))]))
                .build()
                .unwrap();
            w.add_file(f, 1).unwrap();
        }
        w.write_manifest_file().await.unwrap();
        io.new_input(path).unwrap().read().await.unwrap().to_vec()
    }

    fn entries(m: &Manifest) -> Vec<ManifestEntry> {
        m.entries().iter().map(|e| (**e).clone()).collect()
    }

    #[test]
    fn duckdb_manifests_are_read_with_the_tables_schema() {
        let t = table(false);
        let duck = duckdb14_manifest("memory:///t/data/x.parquet", 10, 1234, 0);
        // iceberg-rust refuses DuckDB 1.4's header; Firn reads the file as Java does.
        assert!(Manifest::parse_avro(&duck).is_err());
        let m = parse_manifest(&duck, &t, None).unwrap();
        let e = &m.entries()[0];
        assert_eq!(e.file_path(), "memory:///t/data/x.parquet");
        assert_eq!((e.record_count(), e.file_size_in_bytes()), (10, 1234));
        assert_eq!(e.status(), ManifestStatus::Added);
    }

    #[tokio::test]
    async fn bogus_or_missing_headers_read_the_same_entries() {
        for partitioned in [false, true] {
            let t = table(partitioned);
            let good = write(&t, 5).await;
            let want = entries(&Manifest::parse_avro(&good).unwrap());
            for drop in [false, true] {
                let bad = with_bogus_headers(&good, drop);
                assert!(Manifest::parse_avro(&bad).is_err());
                assert_eq!(entries(&parse_manifest(&bad, &t, None).unwrap()), want);
            }
            assert_eq!(entries(&parse_manifest(&good, &t, None).unwrap()), want);
        }
        // A spec whose partition field the file does not have is refused, not read as null.
        let good = write(&table(true), 2).await;
        let other = table_with(Some("other"));
        assert!(parse_manifest(&good, &other, None).is_err());
        assert!(parse_manifest(b"not avro", &other, None).is_err());
    }

    /// `avro.schema` as DuckDB 1.4 writes it for an unpartitioned table (duckdb-avro
    /// src/avro_copy.cpp, duckdb-iceberg v1.4 src/iceberg_manifest.cpp:78-418), simplified.
    const DUCKDB14_AVRO_SCHEMA: &str = r#"{"type":"record","name":"manifest_entry","fields":[
     {"name":"status","field-id":0,"type":"int"},
     {"name":"snapshot_id","field-id":1,"type":["null","long"]},
     {"name":"sequence_number","field-id":3,"type":["null","long"]},
     {"name":"file_sequence_number","field-id":4,"type":["null","long"]},
     {"name":"data_file","field-id":2,"type":{"type":"record","name":"data_file","fields":[
      {"name":"content","field-id":134,"type":"int"},
      {"name":"file_path","field-id":100,"type":"string"},
      {"name":"file_format","field-id":101,"type":"string"},
      {"name":"partition","field-id":102,"type":{"type":"record","name":"partition","fields":[]}},
      {"name":"record_count","field-id":103,"type":"long"},
      {"name":"file_size_in_bytes","field-id":104,"type":"long"},
      {"name":"lower_bounds","field-id":125,"type":["null",{"type":"array","logicalType":"map",
        "items":{"type":"record","name":"element0","fields":[
          {"name":"key","field-id":126,"type":"int"},{"name":"value","field-id":127,"type":"bytes"}]}}]},
      {"name":"upper_bounds","field-id":128,"type":["null",{"type":"array","logicalType":"map",
        "items":{"type":"record","name":"element1","fields":[
          {"name":"key","field-id":129,"type":"int"},{"name":"value","field-id":130,"type":"bytes"}]}}]}
     ]}}
    ]}"#;

    /// The `schema` header DuckDB 1.4 writes: its manifest-entry struct, not the table schema
    /// (iceberg_manifest.cpp:84-354, 381-384). `lower_bounds` has an Avro-style type, so
    /// `serde_json::from_slice::<iceberg::spec::Schema>` refuses it.
    const DUCKDB14_SCHEMA_HEADER: &str = r#"{"type":"struct","schema-id":0,"fields":[{"id":0,"name":"status","required":true,"type":"int"},{"id":1,"name":"snapshot_id","required":false,"type":"long"},{"id":3,"name":"sequence_number","required":false,"type":"long"},{"id":4,"name":"file_sequence_number","required":false,"type":"long"},{"id":2,"name":"data_file","required":true,"type":{"type":"struct","fields":[{"id":134,"name":"content","required":true,"type":"int"},{"id":100,"name":"file_path","required":true,"type":"string"},{"id":101,"name":"file_format","required":true,"type":"string"},{"id":102,"name":"partition","required":true,"type":{"type":"struct","fields":[]}},{"id":103,"name":"record_count","required":true,"type":"long"},{"id":104,"name":"file_size_in_bytes","required":true,"type":"long"},{"id":125,"name":"lower_bounds","required":false,"type":{"type":"array","items":{"type":"record","name":"k126_k127","fields":[{"name":"key","type":"int","id":126},{"name":"value","type":"binary","id":127}]}}},{"id":128,"name":"upper_bounds","required":false,"type":{"type":"array","items":{"type":"record","name":"k129_k130","fields":[{"name":"key","type":"int","id":129},{"name":"value","type":"binary","id":130}]}}}]}}]}"#;

    fn duckdb14_manifest(path: &str, records: i64, size: i64, schema_id: i32) -> Vec<u8> {
        let schema = AvroSchema::parse_str(DUCKDB14_AVRO_SCHEMA).unwrap();
        let mut w = apache_avro::Writer::new(&schema, Vec::new());
        for (k, v) in [
            ("schema", DUCKDB14_SCHEMA_HEADER.to_string()),
            ("schema-id", schema_id.to_string()),
            ("partition-spec", "[]".to_string()),
            ("partition-spec-id", "0".to_string()),
            ("format-version", "2".to_string()),
            ("content", "data".to_string()),
        ] {
            w.add_user_metadata(k.to_string(), v).unwrap();
        }
        let some = |v: AvroValue| AvroValue::Union(1, Box::new(v));
        let none = || AvroValue::Union(0, Box::new(AvroValue::Null));
        let data_file = AvroValue::Record(vec![
            ("content".into(), AvroValue::Int(0)),
            ("file_path".into(), AvroValue::String(path.into())),
            ("file_format".into(), AvroValue::String("parquet".into())),
            ("partition".into(), AvroValue::Record(vec![])),
            ("record_count".into(), AvroValue::Long(records)),
            ("file_size_in_bytes".into(), AvroValue::Long(size)),
            ("lower_bounds".into(), some(AvroValue::Array(vec![]))),
            ("upper_bounds".into(), none()),
        ]);
        w.append(AvroValue::Record(vec![
            ("status".into(), AvroValue::Int(1)),
            ("snapshot_id".into(), some(AvroValue::Long(42))),
            ("sequence_number".into(), some(AvroValue::Long(1))),
            ("file_sequence_number".into(), none()),
            ("data_file".into(), data_file),
        ]))
        .unwrap();
        w.into_inner().unwrap()
    }

    /// Post-processes any manifest (e.g. one from iceberg-rust's ManifestWriter) into one with
    /// DuckDB 1.4's bogus `schema` header; or, with `drop`, without `schema`/`partition-spec`.
    fn with_bogus_headers(bytes: &[u8], drop: bool) -> Vec<u8> {
        edit_avro_metadata(bytes, |meta| {
            if drop {
                meta.remove("schema");
                meta.remove("partition-spec");
            } else {
                meta.insert(
                    "schema".into(),
                    AvroValue::Bytes(DUCKDB14_SCHEMA_HEADER.as_bytes().to_vec()),
                );
            }
            Ok(())
        })
        .unwrap()
    }
}
