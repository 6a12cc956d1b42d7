//! Principals, tokens and grants in the catalog database. Each change is one statement, or
//! one transaction whose first statement writes (so SQLite takes the write lock at once
//! and never has to upgrade a read snapshot under a concurrent writer): it happens
//! entirely or not at all, and any error leaves the rows as they were.

use sqlx::Row;

use super::{Caller, Grant, Privilege, Resource, Secret, validate_principal_name};
use crate::db::{Db, is_unique_violation};
use crate::env::Env;
use crate::error::{Error, ObjectKind, Result};
use crate::ident::TableIdent;

/// A principal as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalInfo {
    pub name: String,
    /// `user` or `service`.
    pub kind: String,
    pub created_at_ms: i64,
}

/// A token as listings show it (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub token_id: String,
    pub principal: String,
    /// `token` (made by `firn token create`) or `oauth` (exchanged at the OAuth2 endpoint).
    pub kind: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

/// A token just made: its value is shown this once.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: Secret,
    pub info: TokenInfo,
}

pub(crate) const TOKEN_PREFIX: &str = "firn_";

fn hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

pub(crate) async fn create_principal(
    db: &Db,
    name: &str,
    kind: &str,
    now_ms: i64,
) -> Result<PrincipalInfo> {
    validate_principal_name(name)?;
    if !matches!(kind, "user" | "service") {
        return Err(Error::invalid(
            "kind",
            format!("{kind:?} is not user or service"),
        ));
    }
    sqlx::query("INSERT INTO principals (name, kind, created_at_ms) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(kind)
        .bind(now_ms)
        .execute(&db.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::AlreadyExists {
                    kind: ObjectKind::Principal,
                    name: name.to_string(),
                }
            } else {
                e.into()
            }
        })?;
    Ok(PrincipalInfo {
        name: name.to_string(),
        kind: kind.to_string(),
        created_at_ms: now_ms,
    })
}

pub(crate) async fn list_principals(db: &Db) -> Result<Vec<PrincipalInfo>> {
    let rows = sqlx::query("SELECT name, kind, created_at_ms FROM principals ORDER BY name")
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(PrincipalInfo {
                name: r.try_get(0)?,
                kind: r.try_get(1)?,
                created_at_ms: r.try_get(2)?,
            })
        })
        .collect()
}

pub(crate) async fn count_principals(db: &Db) -> Result<i64> {
    Ok(sqlx::query("SELECT COUNT(*) FROM principals")
        .fetch_one(&db.pool)
        .await?
        .try_get(0)?)
}

async fn principal_id(conn: &mut sqlx::AnyConnection, name: &str) -> Result<i64> {
    validate_principal_name(name)?;
    sqlx::query("SELECT principal_id FROM principals WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .ok_or_else(|| Error::not_found(ObjectKind::Principal, name))
}

/// Drops a principal with its tokens and grants, in one transaction.
pub(crate) async fn drop_principal(db: &Db, name: &str) -> Result<()> {
    validate_principal_name(name)?;
    let mut tx = db.pool.begin().await?;
    for table in ["tokens", "grants"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE principal_id IN \
             (SELECT principal_id FROM principals WHERE name = $1)"
        ))
        .bind(name)
        .execute(&mut *tx)
        .await?;
    }
    let n = sqlx::query("DELETE FROM principals WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::not_found(ObjectKind::Principal, name));
    }
    tx.commit().await?;
    Ok(())
}

/// Inserts a token row for the principal named `principal`; `NotFound` without one.
async fn insert_token(
    db: &Db,
    principal: &str,
    hashed: &str,
    kind: &str,
    now_ms: i64,
    expires_at_ms: Option<i64>,
    root_token_id: Option<&str>,
) -> Result<()> {
    validate_principal_name(principal)?;
    let n = sqlx::query(
        "INSERT INTO tokens (token_hash, token_id, principal_id, kind, created_at_ms, \
         expires_at_ms, root_token_id) \
         SELECT $1, $2, principal_id, $3, $4, $5, $6 FROM principals WHERE name = $7",
    )
    .bind(hashed)
    .bind(&hashed[..16])
    .bind(kind)
    .bind(now_ms)
    .bind(expires_at_ms)
    .bind(root_token_id)
    .bind(principal)
    .execute(&db.pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::not_found(ObjectKind::Principal, principal));
    }
    Ok(())
}

/// Makes a token for `principal`, valid for `ttl_ms` (`None`: until revoked); `root` is the
/// original token of an exchanged one. Expired tokens of every principal are deleted on the
/// way.
pub(crate) async fn issue_token(
    db: &Db,
    env: &Env,
    principal: &str,
    kind: &str,
    ttl_ms: Option<i64>,
    root: Option<&str>,
) -> Result<IssuedToken> {
    if let Some(ttl) = ttl_ms
        && ttl <= 0
    {
        return Err(Error::invalid("ttl", "must be more than 0"));
    }
    let now = env.clock.now_ms();
    let secret: String = env
        .ids
        .secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let token = format!("{TOKEN_PREFIX}{secret}");
    let hashed = hash(&token);
    let token_id = hashed[..16].to_string();
    let expires_at_ms = ttl_ms.map(|t| now.saturating_add(t));
    // Expired tokens go on the way (they authenticate nothing already).
    sqlx::query("DELETE FROM tokens WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= $1")
        .bind(now)
        .execute(&db.pool)
        .await?;
    insert_token(db, principal, &hashed, kind, now, expires_at_ms, root).await?;
    Ok(IssuedToken {
        token: Secret::new(token),
        info: TokenInfo {
            token_id,
            principal: principal.to_string(),
            kind: kind.to_string(),
            created_at_ms: now,
            expires_at_ms,
        },
    })
}

/// Keeps `token` as a credential of `principal` (an admin token an operator chose).
pub(crate) async fn adopt_token(db: &Db, env: &Env, principal: &str, token: &Secret) -> Result<()> {
    if token.expose().len() < 32 {
        return Err(Error::invalid(
            "admin token",
            "must be at least 32 characters long",
        ));
    }
    let hashed = hash(token.expose());
    insert_token(
        db,
        principal,
        &hashed,
        "token",
        env.clock.now_ms(),
        None,
        None,
    )
    .await
}

/// The unexpired tokens of `principal` (every principal's when `None`), oldest first.
pub(crate) async fn list_tokens(
    db: &Db,
    principal: Option<&str>,
    now_ms: i64,
) -> Result<Vec<TokenInfo>> {
    let mut conn = db.pool.acquire().await?;
    let filter = match principal {
        Some(p) => principal_id(&mut conn, p).await?,
        None => -1,
    };
    let rows = sqlx::query(
        "SELECT k.token_id, p.name, k.kind, k.created_at_ms, k.expires_at_ms \
         FROM tokens k JOIN principals p ON p.principal_id = k.principal_id \
         WHERE ($1 < 0 OR k.principal_id = $1) \
         AND (k.expires_at_ms IS NULL OR k.expires_at_ms > $2) \
         ORDER BY k.created_at_ms, k.token_id",
    )
    .bind(filter)
    .bind(now_ms)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TokenInfo {
                token_id: r.try_get(0)?,
                principal: r.try_get(1)?,
                kind: r.try_get(2)?,
                created_at_ms: r.try_get(3)?,
                expires_at_ms: r.try_get(4)?,
            })
        })
        .collect()
}

/// The principal a token with `token_id` belongs to.
pub(crate) async fn token_owner(db: &Db, token_id: &str) -> Result<String> {
    sqlx::query(
        "SELECT p.name FROM tokens k JOIN principals p ON p.principal_id = k.principal_id \
         WHERE k.token_id = $1",
    )
    .bind(token_id)
    .fetch_optional(&db.pool)
    .await?
    .map(|r| r.try_get(0))
    .transpose()?
    .ok_or_else(|| Error::not_found(ObjectKind::Token, token_id))
}

/// Revokes a token and every token exchanged from it.
pub(crate) async fn revoke_token(db: &Db, token_id: &str) -> Result<()> {
    let n = sqlx::query("DELETE FROM tokens WHERE token_id = $1 OR root_token_id = $1")
        .bind(token_id)
        .execute(&db.pool)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::not_found(ObjectKind::Token, token_id));
    }
    Ok(())
}

/// What a grant row names: (namespace, table_id) as stored.
async fn resource_key(conn: &mut sqlx::AnyConnection, on: &Resource) -> Result<(String, i64)> {
    on.validate()?;
    Ok(match on {
        Resource::Catalog => (String::new(), 0),
        Resource::Namespace(n) => {
            sqlx::query("SELECT 1 FROM namespaces WHERE name = $1")
                .bind(n)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| Error::not_found(ObjectKind::Namespace, n))?;
            (n.clone(), 0)
        }
        Resource::Table(t) => {
            let id: i64 =
                sqlx::query("SELECT table_id FROM tables WHERE namespace = $1 AND name = $2")
                    .bind(&t.namespace)
                    .bind(&t.name)
                    .fetch_optional(&mut *conn)
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?
                    .ok_or_else(|| Error::not_found(ObjectKind::Table, t.to_string()))?;
            (t.namespace.clone(), id)
        }
    })
}

/// Adds a grant; granting what is held already changes nothing. One statement: a table
/// dropped between the lookup and it leaves a grant on an id no table will have again
/// (ids are never reused), which authorizes nothing.
pub(crate) async fn grant(db: &Db, g: &Grant) -> Result<()> {
    let mut conn = db.pool.acquire().await?;
    let id = principal_id(&mut conn, &g.principal).await?;
    let (namespace, table_id) = resource_key(&mut conn, &g.on).await?;
    sqlx::query(
        "INSERT INTO grants (principal_id, privilege, namespace, table_id) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(g.privilege.name())
    .bind(namespace)
    .bind(table_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes a grant; `NotFound` when it was not held.
pub(crate) async fn revoke(db: &Db, g: &Grant) -> Result<()> {
    let mut conn = db.pool.acquire().await?;
    let id = principal_id(&mut conn, &g.principal).await?;
    let (namespace, table_id) = resource_key(&mut conn, &g.on).await?;
    let n = sqlx::query(
        "DELETE FROM grants WHERE principal_id = $1 AND privilege = $2 AND namespace = $3 \
         AND table_id = $4",
    )
    .bind(id)
    .bind(g.privilege.name())
    .bind(namespace)
    .bind(table_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::not_found(
            ObjectKind::Grant,
            format!("{} ON {} TO {}", g.privilege, g.on, g.principal),
        ));
    }
    Ok(())
}

const GRANT_COLUMNS: &str = "g.privilege, g.namespace, g.table_id, t.namespace, t.name";
const GRANT_JOIN: &str = "LEFT JOIN tables t ON t.table_id = g.table_id AND g.table_id <> 0";

fn grant_of(r: &sqlx::any::AnyRow, first: usize) -> Result<Option<(Privilege, Resource)>> {
    let Some(privilege) = r.try_get::<Option<String>, _>(first)? else {
        return Ok(None);
    };
    let privilege = Privilege::parse(&privilege)
        .map_err(|_| Error::internal(format!("unknown privilege {privilege:?} in grants")))?;
    let namespace: String = r.try_get(first + 1)?;
    let table_id: i64 = r.try_get(first + 2)?;
    let on = match (table_id, namespace.is_empty()) {
        (0, true) => Resource::Catalog,
        (0, false) => Resource::Namespace(namespace),
        _ => match (
            r.try_get::<Option<String>, _>(first + 3)?,
            r.try_get::<Option<String>, _>(first + 4)?,
        ) {
            (Some(ns), Some(name)) => Resource::Table(TableIdent::new(ns, name)),
            // The table went between the drop and its grants' deletion: nothing to hold.
            _ => return Ok(None),
        },
    };
    Ok(Some((privilege, on)))
}

/// Every grant (of one principal, when given), sorted.
pub(crate) async fn grants(db: &Db, principal: Option<&str>) -> Result<Vec<Grant>> {
    let mut conn = db.pool.acquire().await?;
    let filter = match principal {
        Some(p) => principal_id(&mut conn, p).await?,
        None => -1,
    };
    let q = format!(
        "SELECT p.name, {GRANT_COLUMNS} FROM grants g \
         JOIN principals p ON p.principal_id = g.principal_id {GRANT_JOIN} \
         WHERE ($1 < 0 OR g.principal_id = $1)"
    );
    let rows = sqlx::query(&q).bind(filter).fetch_all(&mut *conn).await?;
    let mut out = Vec::new();
    for r in &rows {
        if let Some((privilege, on)) = grant_of(r, 1)? {
            out.push(Grant {
                principal: r.try_get(0)?,
                privilege,
                on,
            });
        }
    }
    out.sort();
    Ok(out)
}

/// The caller a token stands for, with its grants as of now; `None` when the token is
/// unknown, expired or revoked. One query.
pub(crate) async fn caller_by_token(
    db: &Db,
    token: &Secret,
    now_ms: i64,
) -> Result<Option<Caller>> {
    if !token.expose().starts_with(TOKEN_PREFIX) && token.expose().len() < 32 {
        return Ok(None);
    }
    let q = format!(
        "SELECT p.name, {GRANT_COLUMNS} FROM tokens k \
         JOIN principals p ON p.principal_id = k.principal_id \
         LEFT JOIN grants g ON g.principal_id = p.principal_id {GRANT_JOIN} \
         WHERE k.token_hash = $1 AND (k.expires_at_ms IS NULL OR k.expires_at_ms > $2)"
    );
    let rows = sqlx::query(&q)
        .bind(hash(token.expose()))
        .bind(now_ms)
        .fetch_all(&db.pool)
        .await?;
    caller_of(&rows)
}

/// The caller a principal is, with its grants, by name (for credentials an identity
/// provider vouched for); `None` when no such principal exists.
pub(crate) async fn caller_by_principal(db: &Db, name: &str) -> Result<Option<Caller>> {
    let q = format!(
        "SELECT p.name, {GRANT_COLUMNS} FROM principals p \
         LEFT JOIN grants g ON g.principal_id = p.principal_id {GRANT_JOIN} \
         WHERE p.name = $1"
    );
    let rows = sqlx::query(&q).bind(name).fetch_all(&db.pool).await?;
    caller_of(&rows)
}

/// For a valid token: its principal and the id of the original token it descends from
/// (itself, unless it was exchanged).
pub(crate) async fn token_origin(
    db: &Db,
    token: &Secret,
    now_ms: i64,
) -> Result<Option<(String, String)>> {
    let row = sqlx::query(
        "SELECT p.name, COALESCE(k.root_token_id, k.token_id) FROM tokens k \
         JOIN principals p ON p.principal_id = k.principal_id \
         WHERE k.token_hash = $1 AND (k.expires_at_ms IS NULL OR k.expires_at_ms > $2)",
    )
    .bind(hash(token.expose()))
    .bind(now_ms)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

fn caller_of(rows: &[sqlx::any::AnyRow]) -> Result<Option<Caller>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let name: String = first.try_get(0)?;
    let mut grants = Vec::new();
    for r in rows {
        grants.extend(grant_of(r, 1)?);
    }
    Ok(Some(Caller::principal_with(name, grants)))
}
