//! The client commands: each connects to the server and calls the gRPC API.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use firn_client::{FirnClient, TableIdent, TableWriter, WriteMode, WriterOptions, proto as pb};
use serde_json::json;

use crate::Conn;
use crate::output::{print_json, print_table, time_ms};
use firn_core::notation::{parse_partition, parse_schema};

pub(crate) async fn connect(conn: &Conn) -> anyhow::Result<FirnClient> {
    Ok(FirnClient::connect_with(&conn.endpoint, &conn.options()?)
        .await?
        .with_client_name(format!("firn-cli/{}", env!("CARGO_PKG_VERSION"))))
}

pub(crate) fn table_ident(s: &str) -> anyhow::Result<TableIdent> {
    TableIdent::parse(s).map_err(|e| anyhow::anyhow!("{e}"))
}

#[derive(Subcommand)]
pub enum NamespaceCmd {
    /// Create a namespace.
    Create {
        name: String,
        /// The warehouse its tables live in [default: the server's own].
        #[arg(long)]
        warehouse: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List namespaces.
    List {
        /// Only the namespaces of this warehouse.
        #[arg(long)]
        warehouse: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Drop an empty namespace.
    Drop {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn namespace(cmd: NamespaceCmd) -> anyhow::Result<()> {
    match cmd {
        NamespaceCmd::Create {
            name,
            warehouse,
            conn,
        } => {
            let ns = connect(&conn)
                .await?
                .create_namespace_in(&name, warehouse.as_deref().unwrap_or_default())
                .await?;
            if conn.json {
                print_json(&json!({"namespace": name, "warehouse": ns.warehouse}));
            } else {
                println!("created namespace {name} in warehouse {}", ns.warehouse);
            }
        }
        NamespaceCmd::List { warehouse, conn } => {
            let list = connect(&conn)
                .await?
                .list_namespaces_in(warehouse.as_deref().unwrap_or_default())
                .await?;
            if conn.json {
                print_json(&json!(
                    list.iter()
                        .map(|n| json!({
                            "name": n.name,
                            "warehouse": n.warehouse,
                            "properties": n.properties,
                        }))
                        .collect::<Vec<_>>()
                ));
            } else {
                print_table(
                    &["namespace", "warehouse"],
                    &list
                        .into_iter()
                        .map(|n| vec![n.name, n.warehouse])
                        .collect::<Vec<_>>(),
                );
            }
        }
        NamespaceCmd::Drop { name, conn } => {
            connect(&conn).await?.drop_namespace(&name).await?;
            if !conn.json {
                println!("dropped namespace {name}");
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum WarehouseCmd {
    /// Create a warehouse, e.g. `firn warehouse create lake s3://bucket/lake --option
    /// endpoint=https://s3.example.com --option region=eu-west-1`. The server checks the
    /// store first (it must be reachable and writable with these options).
    Create {
        name: String,
        /// Its storage root: s3://bucket/prefix or file:///dir.
        url: String,
        /// A storage option KEY=VALUE (as `firn serve --warehouse-option`); repeatable.
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List warehouses (secret options shown as ***).
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Drop a warehouse no namespace is bound to (its objects stay).
    Drop {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn warehouse(cmd: WarehouseCmd) -> anyhow::Result<()> {
    match cmd {
        WarehouseCmd::Create {
            name,
            url,
            options,
            conn,
        } => {
            let options = crate::key_values("--option", &options)?;
            let w = connect(&conn)
                .await?
                .create_warehouse(&name, &url, options)
                .await?;
            if conn.json {
                print_json(&warehouse_json(&w));
            } else {
                println!("created warehouse {} at {}", w.name, w.url);
            }
        }
        WarehouseCmd::List { conn } => {
            let list = connect(&conn).await?.list_warehouses().await?;
            if conn.json {
                print_json(&json!(list.iter().map(warehouse_json).collect::<Vec<_>>()));
            } else {
                print_table(
                    &["warehouse", "url", "source", "options"],
                    &list
                        .into_iter()
                        .map(|w| {
                            let mut opts: Vec<String> =
                                w.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            opts.sort();
                            vec![w.name, w.url, w.source, opts.join(" ")]
                        })
                        .collect::<Vec<_>>(),
                );
            }
        }
        WarehouseCmd::Drop { name, conn } => {
            connect(&conn).await?.drop_warehouse(&name).await?;
            if !conn.json {
                println!("dropped warehouse {name}");
            }
        }
    }
    Ok(())
}

fn warehouse_json(w: &pb::Warehouse) -> serde_json::Value {
    json!({"name": w.name, "url": w.url, "source": w.source, "options": w.options})
}

#[derive(Subcommand)]
pub enum TableCmd {
    /// Create a table, e.g. `firn table create ns.t --schema "id:long,ts:timestamp" --partition-by "day(ts)"`.
    Create {
        /// NAMESPACE.TABLE
        table: String,
        /// Columns as NAME:TYPE[ not null],... with Iceberg types
        /// (boolean, int, long, float, double, decimal(P,S), date, time, timestamp, timestamptz, string, uuid, binary).
        #[arg(long)]
        schema: String,
        /// Partition fields: column, year(c), month(c), day(c), hour(c), bucket(N,c), truncate(W,c); comma-separated.
        #[arg(long)]
        partition_by: Option<String>,
        /// Table location [default: inside the server's warehouse].
        #[arg(long)]
        location: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the tables of a namespace.
    List {
        namespace: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a table: location, schema, partitioning, current snapshot.
    Show {
        /// NAMESPACE.TABLE
        table: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Drop a table from the catalog (its files stay).
    Drop {
        /// NAMESPACE.TABLE
        table: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn table_json(t: &pb::Table) -> serde_json::Value {
    let parse =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or(serde_json::Value::Null);
    json!({
        "table": t.ident.as_ref().map(|i| format!("{}.{}", i.namespace, i.name)),
        "uuid": t.table_uuid,
        "location": t.location,
        "warehouse": t.warehouse,
        "metadata_location": t.metadata_location,
        "version": t.version,
        "current_snapshot_id": t.current_snapshot_id,
        "schema": parse(&t.schema_json),
        "partition_spec": parse(&t.partition_spec_json),
        "properties": t.properties,
    })
}

pub async fn table(cmd: TableCmd) -> anyhow::Result<()> {
    match cmd {
        TableCmd::Create {
            table,
            schema,
            partition_by,
            location,
            conn,
        } => {
            let ident = table_ident(&table)?;
            let fields = parse_schema(&schema).map_err(|e| anyhow::anyhow!("--schema: {e}"))?;
            let partition = partition_by
                .as_deref()
                .map(parse_partition)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--partition-by: {e}"))?
                .unwrap_or_default();
            let req = pb::CreateTableRequest {
                ident: Some(firn_client::proto_ident(&ident)),
                fields: fields
                    .into_iter()
                    .map(|f| pb::Field {
                        name: f.name,
                        r#type: f.type_json,
                        required: f.required,
                        doc: String::new(),
                    })
                    .collect(),
                partition_by: partition
                    .into_iter()
                    .map(|p| pb::PartitionField {
                        source_column: p.source_column,
                        transform: p.transform,
                        name: p.name.unwrap_or_default(),
                    })
                    .collect(),
                location: location.unwrap_or_default(),
                properties: Default::default(),
            };
            let t = connect(&conn).await?.create_table(req).await?;
            if conn.json {
                print_json(&table_json(&t));
            } else {
                println!("created table {ident} at {}", t.location);
            }
        }
        TableCmd::List { namespace, conn } => {
            let tables = connect(&conn).await?.list_tables(&namespace).await?;
            if conn.json {
                print_json(&json!(
                    tables.iter().map(|t| t.to_string()).collect::<Vec<_>>()
                ));
            } else {
                print_table(
                    &["table"],
                    &tables
                        .iter()
                        .map(|t| vec![t.to_string()])
                        .collect::<Vec<_>>(),
                );
            }
        }
        TableCmd::Show { table, conn } => {
            let ident = table_ident(&table)?;
            let t = connect(&conn).await?.load_table(&ident, false).await?;
            let v = table_json(&t);
            if conn.json {
                print_json(&v);
            } else {
                println!("table:             {ident}");
                println!("location:          {}", t.location);
                println!("warehouse:         {}", t.warehouse);
                println!("metadata:          {}", t.metadata_location);
                println!("version:           {}", t.version);
                println!(
                    "current snapshot:  {}",
                    t.current_snapshot_id
                        .map_or("none".into(), |s| s.to_string())
                );
                println!("columns:");
                for f in v["schema"]["fields"].as_array().into_iter().flatten() {
                    let ty = match &f["type"] {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    println!(
                        "  {:>3}  {}  {}{}",
                        f["id"],
                        f["name"].as_str().unwrap_or("?"),
                        ty,
                        if f["required"].as_bool() == Some(true) {
                            "  not null"
                        } else {
                            ""
                        }
                    );
                }
                let parts = v["partition_spec"]["fields"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if parts.is_empty() {
                    println!("partitioned by:    (unpartitioned)");
                } else {
                    let p: Vec<String> = parts
                        .iter()
                        .map(|p| {
                            format!(
                                "{} = {}({})",
                                p["name"].as_str().unwrap_or("?"),
                                p["transform"].as_str().unwrap_or("?"),
                                p["source-id"]
                            )
                        })
                        .collect();
                    println!("partitioned by:    {}", p.join(", "));
                }
            }
        }
        TableCmd::Drop { table, conn } => {
            let ident = table_ident(&table)?;
            connect(&conn).await?.drop_table(&ident).await?;
            if !conn.json {
                println!("dropped table {ident}");
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LoadMode {
    /// Add the rows to the table.
    Append,
    /// Replace all rows of the table.
    Overwrite,
}

#[derive(clap::Args)]
pub struct LoadArgs {
    /// NAMESPACE.TABLE
    table: String,
    /// Files to load: .parquet, .csv (with a header) or .json/.jsonl/.ndjson (one object per line).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "append")]
    mode: LoadMode,
    /// Roll output files at this many MiB.
    #[arg(long, default_value_t = 128)]
    target_file_size_mb: usize,
    #[command(flatten)]
    conn: Conn,
}

pub async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let ident = table_ident(&args.table)?;
    let client = connect(&args.conn).await?;
    let options = WriterOptions {
        target_file_size: args.target_file_size_mb.max(1) << 20,
        mode: match args.mode {
            LoadMode::Append => WriteMode::Append,
            LoadMode::Overwrite => WriteMode::Overwrite,
        },
        ..Default::default()
    };
    let mut writer = TableWriter::new(&client, &ident, options).await?;
    let schema = writer.arrow_schema().clone();
    for path in &args.files {
        let reading = || format!("reading {}", path.display());
        let mut batches = crate::load::stream_file(path, &schema).with_context(reading)?;
        while let Some(b) = batches.recv().await {
            writer
                .write(&b.with_context(reading)?)
                .await
                .with_context(|| format!("loading {}", path.display()))?;
        }
    }
    let rows = writer.rows();
    let r = writer.commit().await?;
    if args.conn.json {
        print_json(
            &json!({"snapshot_id": r.snapshot_id, "sequence_number": r.sequence_number, "rows": rows}),
        );
    } else {
        let plural = if rows == 1 { "" } else { "s" };
        println!("committed snapshot {} ({rows} row{plural})", r.snapshot_id);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct SnapshotsArgs {
    /// NAMESPACE.TABLE
    table: String,
    #[command(flatten)]
    conn: Conn,
}

pub async fn snapshots(args: SnapshotsArgs) -> anyhow::Result<()> {
    let ident = table_ident(&args.table)?;
    let snaps = connect(&args.conn).await?.list_snapshots(&ident).await?;
    let num = |s: &pb::Snapshot, k: &str| s.summary.get(k).cloned().unwrap_or_else(|| "0".into());
    if args.conn.json {
        print_json(&json!(
            snaps
                .iter()
                .map(|s| json!({
                    "snapshot_id": s.snapshot_id,
                    "parent_snapshot_id": s.parent_snapshot_id,
                    "sequence_number": s.sequence_number,
                    "timestamp_ms": s.timestamp_ms,
                    "operation": s.operation,
                    "summary": s.summary,
                    "manifest_list": s.manifest_list,
                    "commit_id": s.commit_id,
                }))
                .collect::<Vec<_>>()
        ));
    } else {
        let rows: Vec<Vec<String>> = snaps
            .iter()
            .map(|s| {
                vec![
                    s.sequence_number.to_string(),
                    s.snapshot_id.to_string(),
                    time_ms(s.timestamp_ms),
                    s.operation.clone(),
                    num(s, "added-records"),
                    num(s, "deleted-records"),
                    num(s, "total-records"),
                    num(s, "total-data-files"),
                ]
            })
            .collect();
        print_table(
            &[
                "seq",
                "snapshot_id",
                "committed_at (UTC)",
                "operation",
                "added_rows",
                "deleted_rows",
                "total_rows",
                "total_files",
            ],
            &rows,
        );
    }
    Ok(())
}
