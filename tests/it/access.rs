//! Authentication and authorization on every transport: the authorization matrix (every
//! principal × every operation × gRPC, Iceberg REST and SQL), listings filtered to what a
//! caller may see, and the commit log naming who committed.

use std::collections::BTreeMap;

use firn_client::{FirnClient, TableIdent, TableWriter, WriterOptions, proto as pb};
use firn_query::{FirnSession, QueryError};
use firn_tests::{TestServer, batch, create_table, pb_ident, test_fields};
use serde_json::{Value, json};
use tonic::Code;

/// The principals of the matrix and their grants (admin is the server's first principal).
const GRANTS: &[(&str, &str, &str, &str)] = &[
    ("reader", "read", "namespace", "sales"),
    ("writer", "write", "table", "sales.orders"),
    ("maint", "maintain", "table", "sales.orders"),
    ("manager", "manage", "namespace", "sales"),
];

/// Everyone the matrix calls as: principals, a principal with no grant, no credential
/// and a forged token.
const CALLERS: &[&str] = &[
    "admin",
    "reader",
    "writer",
    "maint",
    "manager",
    "nobody",
    "anonymous",
    "forged",
];

const READ: &[&str] = &["admin", "reader", "writer", "maint", "manager"];
const WRITE: &[&str] = &["admin", "writer", "manager"];
const MAINTAIN: &[&str] = &["admin", "maint", "manager"];
const MANAGE: &[&str] = &["admin", "manager"];
const ADMIN: &[&str] = &["admin"];

struct World {
    server: TestServer,
    tokens: BTreeMap<&'static str, Option<String>>,
    admin: FirnClient,
    http: reqwest::Client,
}

fn orders() -> TableIdent {
    TableIdent::new("sales", "orders")
}

async fn world() -> World {
    let server = TestServer::start_secured().await;
    let admin = server.admin().await;
    let (ident, _) = create_table(&admin, "sales", "orders", false).await;
    append(&admin, &ident, 0..10).await.unwrap();
    create_table(&admin, "hr", "people", false).await;
    let mut tokens = BTreeMap::new();
    tokens.insert("admin", server.admin_token.clone());
    tokens.insert("anonymous", None);
    tokens.insert("forged", Some(format!("firn_{}", "ab".repeat(32))));
    let mut access = admin.access();
    for name in [
        "reader",
        "writer",
        "maint",
        "manager",
        "nobody",
        "bystander",
    ] {
        access
            .create_principal(pb::CreatePrincipalRequest {
                name: name.into(),
                kind: "user".into(),
            })
            .await
            .unwrap();
        let t = access
            .create_token(pb::CreateTokenRequest {
                principal: name.into(),
                ttl_seconds: Some(3600),
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        tokens.insert(
            CALLERS
                .iter()
                .find(|c| **c == name)
                .copied()
                .unwrap_or("bystander"),
            Some(t),
        );
    }
    for (who, privilege, kind, name) in GRANTS {
        access
            .grant(grant(who, privilege, kind, name))
            .await
            .unwrap();
    }
    // What each caller's state-changing operations act on, made by the admin.
    for who in CALLERS {
        for t in ["drop", "rename", "rdrop"] {
            create_table(&admin, "sales", &format!("{t}_{who}"), false).await;
        }
        admin
            .create_namespace(&format!("empty_{who}"))
            .await
            .unwrap();
    }
    World {
        server,
        tokens,
        admin,
        http: reqwest::Client::new(),
    }
}

fn grant(who: &str, privilege: &str, kind: &str, name: &str) -> pb::GrantRequest {
    pb::GrantRequest {
        principal: who.into(),
        privilege: privilege.into(),
        on: Some(pb::Resource {
            kind: kind.into(),
            name: name.into(),
        }),
    }
}

async fn append(
    client: &FirnClient,
    ident: &TableIdent,
    ids: std::ops::Range<i64>,
) -> firn_client::Result<pb::CommitResponse> {
    let mut w = TableWriter::new(client, ident, WriterOptions::default()).await?;
    w.write(&batch(ids, 0)).await?;
    w.commit().await
}

/// Everything an operation could change, read from the catalog database: namespaces,
/// tables (pointer, metadata, refs), principals, tokens and grants.
async fn fingerprint(w: &World) -> String {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&w.server.catalog_url).await.unwrap();
    let mut out = Vec::new();
    for q in [
        "SELECT name || ' ' || properties FROM namespaces ORDER BY name",
        "SELECT namespace || '.' || name || ' v' || CAST(version AS TEXT) || ' s' || \
         COALESCE(CAST(current_snapshot_id AS TEXT), '-') || ' ' || base_metadata \
         FROM tables ORDER BY namespace, name",
        "SELECT CAST(table_id AS TEXT) || ' ' || name || ' ' || CAST(snapshot_id AS TEXT) \
         FROM refs ORDER BY table_id, name",
        "SELECT name FROM principals ORDER BY name",
        "SELECT token_id FROM tokens ORDER BY token_id",
        "SELECT CAST(principal_id AS TEXT) || ' ' || privilege || ' ' || namespace || ' ' || \
         CAST(table_id AS TEXT) FROM grants ORDER BY 1",
    ] {
        for r in sqlx::query(q).fetch_all(&pool).await.unwrap() {
            out.push(r.get::<String, _>(0));
        }
        out.push("--".into());
    }
    pool.close().await;
    out.join("\n")
}

/// How a call ended: allowed, or refused with a gRPC code (REST statuses mapped to theirs).
#[derive(Debug, PartialEq)]
enum Outcome {
    Done,
    Refused(Code),
    Other(String),
}

fn grpc<T>(r: Result<T, tonic::Status>) -> Outcome {
    match r {
        Ok(_) => Outcome::Done,
        Err(s) => Outcome::Refused(s.code()),
    }
}

fn client_outcome<T>(r: firn_client::Result<T>) -> Outcome {
    match r {
        Ok(_) => Outcome::Done,
        Err(firn_client::ClientError::Status(s)) => Outcome::Refused(s.code()),
        Err(e) => Outcome::Other(e.to_string()),
    }
}

fn query_outcome<T>(r: Result<T, QueryError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Done,
        Err(QueryError::Server(firn_client::ClientError::Status(s))) => Outcome::Refused(s.code()),
        Err(e) => Outcome::Other(e.to_string()),
    }
}

async fn rest(
    w: &World,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Outcome {
    let mut req = w
        .http
        .request(method, format!("{}/v1{path}", w.server.rest_endpoint));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    match status {
        200..=299 => Outcome::Done,
        401 => {
            assert_eq!(body["error"]["type"], "NotAuthorizedException", "{body}");
            Outcome::Refused(Code::Unauthenticated)
        }
        403 => {
            assert_eq!(body["error"]["type"], "ForbiddenException", "{body}");
            Outcome::Refused(Code::PermissionDenied)
        }
        _ => Outcome::Other(format!("{status} {body}")),
    }
}

const OPS: &[(&str, &[&str])] = &[
    ("grpc load table", READ),
    ("grpc list snapshots", READ),
    ("grpc plan scan", READ),
    ("grpc list commits", READ),
    ("grpc list refs", READ),
    ("grpc reserve data files", WRITE),
    ("grpc append", WRITE),
    ("grpc expire snapshots (dry run)", MAINTAIN),
    ("grpc remove orphan files (dry run)", MAINTAIN),
    ("grpc compact (dry run)", MAINTAIN),
    ("grpc create tag", MANAGE),
    ("grpc create table", MANAGE),
    ("grpc drop table", MANAGE),
    ("grpc rename table", MANAGE),
    ("grpc create namespace", ADMIN),
    ("grpc drop namespace", ADMIN),
    ("grpc create principal", ADMIN),
    ("grpc grant", ADMIN),
    ("grpc list principals", ADMIN),
    ("rest load table", READ),
    ("rest set table properties", MANAGE),
    ("rest create table", MANAGE),
    ("rest drop table", MANAGE),
    ("rest namespace properties", MANAGE),
    ("rest create namespace", ADMIN),
    ("sql select", READ),
    ("sql insert", WRITE),
];

async fn run(w: &World, op: &str, who: &str, c: &FirnClient) -> Outcome {
    let token = w.tokens[who].as_deref();
    let t = orders();
    let id = pb_ident(&t);
    let mut raw = c.raw();
    match op {
        "grpc load table" => client_outcome(c.load_table(&t, true).await),
        "grpc list snapshots" => client_outcome(c.list_snapshots(&t).await),
        "grpc plan scan" => client_outcome(c.plan_scan(&t, None, None).await),
        "grpc list commits" => grpc(
            raw.list_commits(pb::ListCommitsRequest {
                ident: id,
                limit: 0,
            })
            .await,
        ),
        "grpc list refs" => client_outcome(c.list_refs(&t).await),
        "grpc reserve data files" => {
            client_outcome(c.reserve_data_files(&t, vec![String::new()]).await)
        }
        "grpc append" => client_outcome(append(c, &t, 100..105).await),
        "grpc expire snapshots (dry run)" => client_outcome(
            c.expire_snapshots(pb::ExpireSnapshotsRequest {
                ident: id,
                dry_run: true,
                ..Default::default()
            })
            .await,
        ),
        "grpc remove orphan files (dry run)" => client_outcome(
            c.remove_orphan_files(pb::RemoveOrphanFilesRequest {
                ident: id,
                dry_run: true,
                ..Default::default()
            })
            .await,
        ),
        "grpc compact (dry run)" => client_outcome(
            c.compact(pb::CompactRequest {
                ident: id,
                dry_run: true,
                ..Default::default()
            })
            .await,
        ),
        "grpc create tag" => {
            let head = w
                .admin
                .load_table(&t, false)
                .await
                .unwrap()
                .current_snapshot_id;
            client_outcome(
                c.manage_snapshots(
                    &t,
                    pb::manage_snapshots_request::Action::CreateTag(pb::CreateRef {
                        name: format!("tag_{who}"),
                        snapshot_id: head,
                    }),
                )
                .await,
            )
        }
        "grpc create table" => client_outcome(
            c.create_table(pb::CreateTableRequest {
                ident: pb_ident(&TableIdent::new("sales", format!("new_{who}"))),
                fields: test_fields(),
                ..Default::default()
            })
            .await,
        ),
        "grpc drop table" => client_outcome(
            c.drop_table(&TableIdent::new("sales", format!("drop_{who}")))
                .await,
        ),
        "grpc rename table" => client_outcome(
            c.rename_table(
                &TableIdent::new("sales", format!("rename_{who}")),
                &TableIdent::new("sales", format!("renamed_{who}")),
            )
            .await,
        ),
        "grpc create namespace" => client_outcome(c.create_namespace(&format!("ns_{who}")).await),
        "grpc drop namespace" => client_outcome(c.drop_namespace(&format!("empty_{who}")).await),
        "grpc create principal" => grpc(
            c.access()
                .create_principal(pb::CreatePrincipalRequest {
                    name: format!("p_{who}"),
                    kind: "service".into(),
                })
                .await,
        ),
        "grpc grant" => grpc(
            c.access()
                .grant(grant("bystander", "read", "table", "sales.orders"))
                .await,
        ),
        "grpc list principals" => grpc(
            c.access()
                .list_principals(pb::ListPrincipalsRequest {})
                .await,
        ),
        "rest load table" => {
            rest(
                w,
                token,
                reqwest::Method::GET,
                "/namespaces/sales/tables/orders",
                None,
            )
            .await
        }
        "rest set table properties" => {
            rest(
                w,
                token,
                reqwest::Method::POST,
                "/namespaces/sales/tables/orders",
                Some(json!({"requirements": [], "updates": [
                    {"action": "set-properties", "updates": {format!("by-{who}"): "yes"}}
                ]})),
            )
            .await
        }
        "rest create table" => {
            rest(
                w,
                token,
                reqwest::Method::POST,
                "/namespaces/sales/tables",
                Some(json!({"name": format!("rnew_{who}"), "schema": {
                    "type": "struct", "schema-id": 0,
                    "fields": [{"id": 1, "name": "id", "type": "long", "required": true}]
                }})),
            )
            .await
        }
        "rest drop table" => {
            rest(
                w,
                token,
                reqwest::Method::DELETE,
                &format!("/namespaces/sales/tables/rdrop_{who}"),
                None,
            )
            .await
        }
        "rest namespace properties" => {
            rest(
                w,
                token,
                reqwest::Method::POST,
                "/namespaces/sales/properties",
                Some(json!({"removals": [], "updates": {format!("by-{who}"): "yes"}})),
            )
            .await
        }
        "rest create namespace" => {
            rest(
                w,
                token,
                reqwest::Method::POST,
                "/namespaces",
                Some(json!({"namespace": [format!("rns_{who}")]})),
            )
            .await
        }
        "sql select" => {
            let s = FirnSession::new(c.clone());
            query_outcome(s.sql("SELECT count(*) FROM sales.orders").await)
        }
        "sql insert" => {
            let s = FirnSession::new(c.clone());
            query_outcome(
                s.sql("INSERT INTO sales.orders VALUES (900, 'sql', NULL)")
                    .await,
            )
        }
        other => panic!("no operation {other:?}"),
    }
}

#[tokio::test]
async fn every_operation_on_every_transport_follows_the_grants_and_a_denial_changes_nothing() {
    let w = world().await;
    let mut wrong = Vec::new();
    let (mut allowed_runs, mut denied_runs) = (0, 0);
    for who in CALLERS {
        let c = w.server.client_as(w.tokens[who].as_deref()).await;
        for (op, allowed) in OPS {
            let should = allowed.contains(who);
            let before = if should {
                None
            } else {
                Some(fingerprint(&w).await)
            };
            let got = run(&w, op, who, &c).await;
            let expected_refusal = if matches!(*who, "anonymous" | "forged") {
                Code::Unauthenticated
            } else {
                Code::PermissionDenied
            };
            match (&got, should) {
                (Outcome::Done, true) => allowed_runs += 1,
                (Outcome::Refused(code), false) if *code == expected_refusal => {
                    denied_runs += 1;
                    let after = fingerprint(&w).await;
                    if before.as_deref() != Some(after.as_str()) {
                        wrong.push(format!("{who} / {op}: refused, but the catalog changed"));
                    }
                }
                _ => wrong.push(format!(
                    "{who} / {op}: got {got:?}, expected {}",
                    if should {
                        "success".to_string()
                    } else {
                        format!("{expected_refusal:?}")
                    }
                )),
            }
        }
    }
    println!(
        "authorization matrix: {allowed_runs} allowed, {denied_runs} denied, {} wrong",
        wrong.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(allowed_runs > 50 && denied_runs > 100);
}

#[tokio::test]
async fn listings_show_only_what_a_caller_holds_something_on() {
    let w = world().await;
    let names = |v: Vec<pb::Namespace>| v.into_iter().map(|n| n.name).collect::<Vec<_>>();
    let all = names(w.admin.list_namespaces().await.unwrap());
    assert!(all.contains(&"hr".to_string()) && all.contains(&"sales".to_string()));
    for who in ["reader", "writer", "maint", "manager"] {
        let c = w.server.client_as(w.tokens[who].as_deref()).await;
        assert_eq!(
            names(c.list_namespaces().await.unwrap()),
            ["sales"],
            "{who}"
        );
    }
    let nobody = w.server.client_as(w.tokens["nobody"].as_deref()).await;
    assert!(nobody.list_namespaces().await.unwrap().is_empty());
    let e = nobody.list_tables("sales").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied));

    let writer = w.server.client_as(w.tokens["writer"].as_deref()).await;
    assert_eq!(writer.list_tables("sales").await.unwrap(), [orders()]);
    let reader = w.server.client_as(w.tokens["reader"].as_deref()).await;
    assert_eq!(
        reader.list_tables("sales").await.unwrap(),
        w.admin.list_tables("sales").await.unwrap()
    );
    assert_eq!(
        reader.list_tables("hr").await.unwrap_err().code(),
        Some(Code::PermissionDenied)
    );

    // REST lists the same.
    let get = |who: &str, path: &str| {
        let req = w
            .http
            .get(format!("{}/v1{path}", w.server.rest_endpoint))
            .bearer_auth(w.tokens[who].clone().unwrap());
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(
        get("writer", "/namespaces").await["namespaces"],
        json!([["sales"]])
    );
    assert_eq!(
        get("writer", "/namespaces/sales/tables").await["identifiers"],
        json!([{"namespace": ["sales"], "name": "orders"}])
    );
    assert_eq!(get("nobody", "/namespaces").await["namespaces"], json!([]));
}

#[tokio::test]
async fn the_commit_log_names_the_principal_and_revoking_takes_effect_at_once() {
    let w = world().await;
    let writer = w.server.client_as(w.tokens["writer"].as_deref()).await;
    let committed = append(&writer, &orders(), 20..25).await.unwrap();
    let log = w
        .admin
        .raw()
        .list_commits(pb::ListCommitsRequest {
            ident: pb_ident(&orders()),
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner()
        .commits;
    assert_eq!(log[0].snapshot_id, committed.snapshot_id);
    assert_eq!(log[0].principal, "writer");
    assert_eq!(log.last().unwrap().principal, "admin");
    // SQL reads the same log: who committed what.
    let session = FirnSession::new(w.admin.clone());
    let rows = session
        .sql(r#"SELECT principal, operation, snapshot_id FROM sales."orders$commits""#)
        .await
        .unwrap();
    let b = &rows[0];
    let col = |i: usize| {
        b.column(i)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap()
            .value(0)
            .to_string()
    };
    assert_eq!(
        (col(0), col(1)),
        ("writer".to_string(), "append".to_string())
    );
    let snap = b
        .column(2)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(snap, committed.snapshot_id);

    // Revoked: the next call is refused, on every transport.
    w.admin
        .access()
        .revoke(grant("writer", "write", "table", "sales.orders"))
        .await
        .unwrap();
    let e = append(&writer, &orders(), 30..31).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied));
    // The token itself revoked: unauthenticated.
    let tokens = w
        .admin
        .access()
        .list_tokens(pb::ListTokensRequest {
            principal: "reader".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    w.admin
        .access()
        .revoke_token(pb::RevokeTokenRequest {
            token_id: tokens[0].token_id.clone(),
        })
        .await
        .unwrap();
    let reader = w.server.client_as(w.tokens["reader"].as_deref()).await;
    let e = reader.load_table(&orders(), false).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unauthenticated));
    assert!(
        !e.to_string()
            .contains(w.tokens["reader"].as_deref().unwrap())
    );
}
