//! `firn principal|token|grant|revoke|grants|whoami`: access control over the gRPC API.

use std::time::Duration;

use anyhow::bail;
use firn_client::proto as pb;
use serde_json::json;

use crate::Conn;
use crate::client_cmds::connect;
use crate::output::{print_json, print_table, time_ms};

#[derive(clap::Subcommand)]
pub enum PrincipalCmd {
    /// Create a principal (it holds nothing until granted).
    Create {
        name: String,
        /// user (a person) or service (a job).
        #[arg(long, default_value = "user", value_parser = ["user", "service"])]
        kind: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List principals.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Drop a principal with its tokens and grants.
    Drop {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Subcommand)]
pub enum TokenCmd {
    /// Create a token for a principal; the token is the last line printed (shown once).
    Create {
        principal: String,
        /// How long it is valid (e.g. 30d, 12h) [default: until revoked].
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List unexpired tokens (a principal's, or every principal's).
    List {
        principal: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a token by its id (as `firn token list` shows it).
    Revoke {
        token_id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `PRIVILEGE ON catalog | namespace NAME | table NS.NAME TO|FROM PRINCIPAL`.
#[derive(clap::Args)]
pub struct GrantArgs {
    /// read, write, maintain, manage or admin, then ON, what, TO/FROM and the principal.
    #[arg(num_args = 4..=6, value_name = "PRIVILEGE ON WHAT [NAME] TO PRINCIPAL")]
    words: Vec<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
pub struct GrantsArgs {
    /// Whose grants [default: your own].
    principal: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    conn: Conn,
}

fn expires(ms: Option<i64>) -> String {
    ms.map_or_else(|| "never".to_string(), time_ms)
}

pub async fn principal(cmd: PrincipalCmd) -> anyhow::Result<()> {
    match cmd {
        PrincipalCmd::Create { name, kind, conn } => {
            let req = pb::CreatePrincipalRequest {
                name: name.clone(),
                kind,
            };
            let p = connect(&conn).await?.access().create_principal(req).await?;
            let p = p.into_inner();
            if conn.json {
                print_json(&json!({"principal": p.name, "kind": p.kind}));
            } else {
                println!("created {} principal {}", p.kind, p.name);
            }
        }
        PrincipalCmd::List { conn } => {
            let all = connect(&conn)
                .await?
                .access()
                .list_principals(pb::ListPrincipalsRequest {})
                .await?
                .into_inner()
                .principals;
            if conn.json {
                print_json(&json!(
                    all.iter()
                        .map(|p| json!({"name": p.name, "kind": p.kind, "created_at_ms": p.created_at_ms}))
                        .collect::<Vec<_>>()
                ));
            } else {
                let rows: Vec<Vec<String>> = all
                    .into_iter()
                    .map(|p| vec![p.name, p.kind, time_ms(p.created_at_ms)])
                    .collect();
                print_table(&["name", "kind", "created"], &rows);
            }
        }
        PrincipalCmd::Drop { name, conn } => {
            connect(&conn)
                .await?
                .access()
                .drop_principal(pb::DropPrincipalRequest { name: name.clone() })
                .await?;
            if conn.json {
                print_json(&json!({"dropped": name}));
            } else {
                println!("dropped principal {name}");
            }
        }
    }
    Ok(())
}

pub async fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            principal,
            ttl,
            conn,
        } => {
            let req = pb::CreateTokenRequest {
                principal,
                ttl_seconds: ttl.map(|d| d.as_secs().max(1)),
            };
            let r = connect(&conn)
                .await?
                .access()
                .create_token(req)
                .await?
                .into_inner();
            let info = r.info.unwrap_or_default();
            if conn.json {
                print_json(&json!({
                    "principal": info.principal,
                    "token_id": info.token_id,
                    "expires_at_ms": info.expires_at_ms,
                    "token": r.token,
                }));
            } else {
                println!(
                    "token {} for {} (expires {}); it is shown only now:",
                    info.token_id,
                    info.principal,
                    expires(info.expires_at_ms)
                );
                println!("{}", r.token);
            }
        }
        TokenCmd::List { principal, conn } => {
            let tokens = connect(&conn)
                .await?
                .access()
                .list_tokens(pb::ListTokensRequest {
                    principal: principal.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .tokens;
            if conn.json {
                print_json(&json!(
                    tokens
                        .iter()
                        .map(|t| json!({
                            "token_id": t.token_id, "principal": t.principal, "kind": t.kind,
                            "created_at_ms": t.created_at_ms, "expires_at_ms": t.expires_at_ms,
                        }))
                        .collect::<Vec<_>>()
                ));
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .into_iter()
                    .map(|t| {
                        vec![
                            t.token_id,
                            t.principal,
                            t.kind,
                            time_ms(t.created_at_ms),
                            expires(t.expires_at_ms),
                        ]
                    })
                    .collect();
                print_table(
                    &["token_id", "principal", "kind", "created", "expires"],
                    &rows,
                );
            }
        }
        TokenCmd::Revoke { token_id, conn } => {
            connect(&conn)
                .await?
                .access()
                .revoke_token(pb::RevokeTokenRequest {
                    token_id: token_id.clone(),
                })
                .await?;
            if conn.json {
                print_json(&json!({"revoked": token_id}));
            } else {
                println!("revoked token {token_id}");
            }
        }
    }
    Ok(())
}

/// Parses `PRIVILEGE ON KIND [NAME] TO|FROM PRINCIPAL`.
fn parse_grant(words: &[String], to: bool) -> anyhow::Result<pb::GrantRequest> {
    let joiner = if to { "TO" } else { "FROM" };
    let usage = || {
        anyhow::anyhow!(
            "expected PRIVILEGE ON catalog|namespace NAME|table NS.NAME {joiner} PRINCIPAL, got {:?}",
            words.join(" ")
        )
    };
    let (privilege, rest) = words.split_first().ok_or_else(usage)?;
    let (on, rest) = rest.split_first().ok_or_else(usage)?;
    if !on.eq_ignore_ascii_case("on") {
        return Err(usage());
    }
    let (kind, rest) = rest.split_first().ok_or_else(usage)?;
    let (name, rest) = match rest {
        [j, ..] if j.eq_ignore_ascii_case(joiner) => (String::new(), rest),
        [n, rest @ ..] => (n.clone(), rest),
        [] => return Err(usage()),
    };
    let principal = match rest {
        [j, p] if j.eq_ignore_ascii_case(joiner) => p.clone(),
        _ => return Err(usage()),
    };
    Ok(pb::GrantRequest {
        principal,
        privilege: privilege.to_ascii_lowercase(),
        on: Some(pb::Resource {
            kind: kind.to_ascii_lowercase(),
            name,
        }),
    })
}

pub async fn grant(args: GrantArgs, to: bool) -> anyhow::Result<()> {
    let req = parse_grant(&args.words, to)?;
    let what = describe(&req);
    let mut access = connect(&args.conn).await?.access();
    if to {
        access.grant(req).await?;
    } else {
        access.revoke(req).await?;
    }
    if args.conn.json {
        print_json(&json!({ if to { "granted" } else { "revoked" }: what }));
    } else {
        println!("{} {what}", if to { "granted" } else { "revoked" });
    }
    Ok(())
}

fn resource_text(r: &Option<pb::Resource>) -> String {
    match r {
        Some(pb::Resource { kind, name }) if name.is_empty() => kind.clone(),
        Some(pb::Resource { kind, name }) => format!("{kind} {name}"),
        None => String::new(),
    }
}

fn describe(g: &pb::GrantRequest) -> String {
    format!(
        "{} ON {} TO {}",
        g.privilege,
        resource_text(&g.on),
        g.principal
    )
}

pub async fn grants(args: GrantsArgs) -> anyhow::Result<()> {
    let list = connect(&args.conn)
        .await?
        .access()
        .list_grants(pb::ListGrantsRequest {
            principal: args.principal.unwrap_or_default(),
        })
        .await?
        .into_inner()
        .grants;
    if args.conn.json {
        print_json(&json!(
            list.iter()
                .map(|g| json!({"principal": g.principal, "privilege": g.privilege, "on": resource_text(&g.on)}))
                .collect::<Vec<_>>()
        ));
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|g| {
                vec![
                    g.principal.clone(),
                    g.privilege.clone(),
                    resource_text(&g.on),
                ]
            })
            .collect();
        print_table(&["principal", "privilege", "on"], &rows);
    }
    Ok(())
}

pub async fn whoami(args: WhoamiArgs) -> anyhow::Result<()> {
    let r = connect(&args.conn)
        .await?
        .access()
        .who_am_i(pb::WhoAmIRequest {})
        .await?
        .into_inner();
    if args.conn.json {
        print_json(&json!({"principal": r.principal, "auth_required": r.auth_required}));
    } else if r.principal.is_empty() {
        if r.auth_required {
            bail!("the server requires authentication but took no principal");
        }
        println!("anonymous (authentication is off on this server: everything is allowed)");
    } else {
        println!("{}", r.principal);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn grants_parse_like_sql() {
        let g = parse_grant(&words("read ON namespace sales TO alice"), true).unwrap();
        assert_eq!(describe(&g), "read ON namespace sales TO alice");
        let g = parse_grant(&words("ADMIN on catalog to root"), true).unwrap();
        assert_eq!(describe(&g), "admin ON catalog TO root");
        let g = parse_grant(&words("write ON table s.t FROM etl"), false).unwrap();
        assert_eq!(describe(&g), "write ON table s.t TO etl");
        assert!(parse_grant(&words("write ON table s.t TO etl"), false).is_err());
        assert!(parse_grant(&words("write table s.t TO etl"), true).is_err());
        assert!(parse_grant(&words("write ON table s.t TO"), true).is_err());
    }
}
