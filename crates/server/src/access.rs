//! The `AccessService` handlers: principals, tokens and grants (the checks are the core's).

use std::time::Duration;

use firn_core::auth::{IssuedToken, TokenInfo};
use firn_core::{Catalog, Grant, Privilege, Resource};
use firn_proto::v1 as pb;
use firn_proto::v1::access_service_server::AccessService;
use tonic::{Request, Response, Status};

use crate::convert::{invalid, status};
use crate::service::authenticate;

/// The gRPC face of the catalog's access control.
#[derive(Clone)]
pub struct GrpcAccess {
    catalog: Catalog,
}

impl GrpcAccess {
    pub fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }
}

type Res<T> = Result<Response<T>, Status>;

fn token_info(t: TokenInfo) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: t.token_id,
        principal: t.principal,
        kind: t.kind,
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms,
    }
}

fn pb_resource(r: &Resource) -> pb::Resource {
    let (kind, name) = match r {
        Resource::Catalog => ("catalog", String::new()),
        Resource::Namespace(n) => ("namespace", n.clone()),
        Resource::Table(t) => ("table", t.to_string()),
    };
    pb::Resource {
        kind: kind.into(),
        name,
    }
}

fn grant_of(g: pb::GrantRequest) -> Result<Grant, Status> {
    let pb::GrantRequest {
        principal,
        privilege,
        on,
    } = g;
    let pb::Resource { kind, name } = on.ok_or_else(|| invalid("on", "is required"))?;
    Ok(Grant {
        principal,
        privilege: Privilege::parse(&privilege).map_err(status)?,
        on: Resource::parse(&kind, (!name.is_empty()).then_some(name.as_str())).map_err(status)?,
    })
}

#[tonic::async_trait]
impl AccessService for GrpcAccess {
    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Res<pb::WhoAmIResponse> {
        let caller = authenticate(&self.catalog, &req).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            principal: caller.principal().unwrap_or_default().to_string(),
            auth_required: self.catalog.auth_required(),
        }))
    }

    async fn create_principal(
        &self,
        req: Request<pb::CreatePrincipalRequest>,
    ) -> Res<pb::Principal> {
        let caller = authenticate(&self.catalog, &req).await?;
        let pb::CreatePrincipalRequest { name, kind } = req.into_inner();
        let kind = if kind.is_empty() { "user" } else { &kind };
        let p = self
            .catalog
            .create_principal(&caller, &name, kind)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Principal {
            name: p.name,
            kind: p.kind,
            created_at_ms: p.created_at_ms,
        }))
    }

    async fn list_principals(
        &self,
        req: Request<pb::ListPrincipalsRequest>,
    ) -> Res<pb::ListPrincipalsResponse> {
        let caller = authenticate(&self.catalog, &req).await?;
        let all = self
            .catalog
            .list_principals(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListPrincipalsResponse {
            principals: all
                .into_iter()
                .map(|p| pb::Principal {
                    name: p.name,
                    kind: p.kind,
                    created_at_ms: p.created_at_ms,
                })
                .collect(),
        }))
    }

    async fn drop_principal(
        &self,
        req: Request<pb::DropPrincipalRequest>,
    ) -> Res<pb::DropPrincipalResponse> {
        let caller = authenticate(&self.catalog, &req).await?;
        let pb::DropPrincipalRequest { name } = req.into_inner();
        self.catalog
            .drop_principal(&caller, &name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DropPrincipalResponse {}))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Res<pb::CreateTokenResponse> {
        let caller = authenticate(&self.catalog, &req).await?;
        let pb::CreateTokenRequest {
            principal,
            ttl_seconds,
        } = req.into_inner();
        let IssuedToken { token, info } = self
            .catalog
            .create_token(&caller, &principal, ttl_seconds.map(Duration::from_secs))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: token.expose().to_string(),
            info: Some(token_info(info)),
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Res<pb::ListTokensResponse> {
        let caller = authenticate(&self.catalog, &req).await?;
        let pb::ListTokensRequest { principal } = req.into_inner();
        let tokens = self
            .catalog
            .list_tokens(
                &caller,
                (!principal.is_empty()).then_some(principal.as_str()),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.into_iter().map(token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Res<pb::RevokeTokenResponse> {
        let caller = authenticate(&self.catalog, &req).await?;
        let pb::RevokeTokenRequest { token_id } = req.into_inner();
        self.catalog
            .revoke_token(&caller, &token_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn grant(&self, req: Request<pb::GrantRequest>) -> Res<pb::GrantResponse> {
        let caller = authenticate(&self.catalog, &req).await?;
        let g = grant_of(req.into_inner())?;
        self.catalog.grant(&caller, &g).await.map_err(status)?;
        Ok(Response::new(pb::GrantResponse {}))
    }

    async fn revoke(&self, req: Request<pb::GrantRequest>) -> Res<pb::GrantResponse> {
        let caller = authenticate(&self.catalog, &req).await?;
        let g = grant_of(req.into_inner())?;
        self.catalog.revoke(&caller, &g).await.map_err(status)?;
        Ok(Response::new(pb::GrantResponse {}))
    }

    async fn list_grants(
        &self,
        req: Request<pb::ListGrantsRequest>,
    ) -> Res<pb::ListGrantsResponse> {
        let caller = authenticate(&self.catalog, &req).await?;
        let pb::ListGrantsRequest { principal } = req.into_inner();
        let grants = self
            .catalog
            .list_grants(
                &caller,
                (!principal.is_empty()).then_some(principal.as_str()),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListGrantsResponse {
            grants: grants
                .iter()
                .map(|g| pb::GrantEntry {
                    principal: g.principal.clone(),
                    privilege: g.privilege.name().into(),
                    on: Some(pb_resource(&g.on)),
                })
                .collect(),
        }))
    }
}
