//! Authentication and the administration of principals, tokens and grants (see
//! [`crate::auth`] for the model). Each change is one database transaction.

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::Catalog;
use crate::auth::{
    AuthConfig, Caller, Grant, IdentityProvider, IssuedToken, PrincipalInfo, Privilege, Resource,
    Secret, TokenInfo, Verified, store,
};
use crate::error::{Error, Result};

/// How long a token exchanged at the OAuth2 endpoint is valid.
pub const OAUTH_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The principal a server with authentication on and no principal yet creates.
pub const BOOTSTRAP_ADMIN: &str = "admin";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Catalog {
    /// This catalog with `auth`'s rules for callers.
    pub fn with_auth(mut self, auth: AuthConfig) -> Self {
        self.auth = Arc::new(auth);
        self
    }

    /// Whether every caller must authenticate.
    pub fn auth_required(&self) -> bool {
        self.auth.required
    }

    /// The caller a credential stands for. With authentication required, a valid token
    /// (issued by Firn, unexpired, not revoked) is needed, else `Unauthenticated`. Without,
    /// every caller is unrestricted, and a valid token only names its principal (see
    /// [`AuthConfig::required`]).
    ///
    /// A credential the configured [`IdentityProvider`] claims (a JWT) is judged by it alone:
    /// with authentication required, its reason for refusing is the error (`Unavailable`
    /// when its keys cannot be fetched: retry).
    pub async fn authenticate(&self, credential: Option<&Secret>) -> Result<Caller> {
        if let Some((provider, secret)) = self.provider_of(credential) {
            return match (self.vouched(provider, secret).await, self.auth.required) {
                (Ok((c, _)), true) => Ok(c),
                (Ok((c, _)), false) => Ok(c.unrestricted_as()),
                (Err(e), true) => Err(e),
                (Err(_), false) => Ok(Caller::unrestricted()),
            };
        }
        let found = match credential {
            Some(secret) => store::caller_by_token(&self.shared.db, secret, self.now_ms()).await?,
            None => None,
        };
        match (found, self.auth.required) {
            (Some(c), true) => Ok(c),
            (Some(c), false) => Ok(c.unrestricted_as()),
            (None, false) => Ok(Caller::unrestricted()),
            (None, true) if credential.is_none() => Err(Error::Unauthenticated(
                "this server requires a credential: a bearer token (firn --token or \
                 FIRN_TOKEN) or OAuth2 client credentials"
                    .into(),
            )),
            (None, true) => Err(Error::Unauthenticated(
                "the token is unknown, expired or revoked".into(),
            )),
        }
    }

    /// The identity provider that claims `credential`, if one is configured and does.
    fn provider_of<'a>(
        &'a self,
        credential: Option<&'a Secret>,
    ) -> Option<(&'a dyn IdentityProvider, &'a Secret)> {
        let provider = self.auth.provider.as_deref()?;
        let secret = credential?;
        provider.claims(secret).then_some((provider, secret))
    }

    /// The caller (with its grants) an identity provider's credential stands for, and what
    /// the provider said of it.
    async fn vouched(
        &self,
        provider: &dyn IdentityProvider,
        secret: &Secret,
    ) -> Result<(Caller, Verified)> {
        let verified = provider.verify(secret, self.now_ms()).await?;
        match store::caller_by_principal(&self.shared.db, &verified.principal).await? {
            Some(caller) => Ok((caller, verified)),
            None => Err(Error::Unauthenticated(format!(
                "the identity provider's token names {:?}, which is not a principal of this \
                 catalog (an admin creates it with `firn principal create`)",
                verified.principal
            ))),
        }
    }

    /// Creates the first principal of a server that requires authentication: `admin`, with
    /// `admin` on the catalog, holding `token` when given (an operator's choice, from the
    /// config), else a new token that is returned (to be shown once). Does nothing, and
    /// returns `None`, when any principal exists.
    pub async fn bootstrap_admin(&self, token: Option<&Secret>) -> Result<Option<IssuedToken>> {
        if store::count_principals(&self.shared.db).await? > 0 {
            return Ok(None);
        }
        match store::create_principal(&self.shared.db, BOOTSTRAP_ADMIN, "service", self.now_ms())
            .await
        {
            Ok(_) => {}
            // Another replica starting at the same moment made it.
            Err(Error::AlreadyExists { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        store::grant(
            &self.shared.db,
            &Grant {
                principal: BOOTSTRAP_ADMIN.into(),
                privilege: Privilege::Admin,
                on: Resource::Catalog,
            },
        )
        .await?;
        info!(principal = BOOTSTRAP_ADMIN, "created the first principal");
        match token {
            Some(t) => {
                store::adopt_token(&self.shared.db, &self.shared.env, BOOTSTRAP_ADMIN, t).await?;
                Ok(None)
            }
            None => store::issue_token(
                &self.shared.db,
                &self.shared.env,
                BOOTSTRAP_ADMIN,
                "token",
                None,
                None,
            )
            .await
            .map(Some),
        }
    }

    /// Creates a principal (`kind`: `user` or `service`); needs `admin` on the catalog.
    pub async fn create_principal(
        &self,
        caller: &Caller,
        name: &str,
        kind: &str,
    ) -> Result<PrincipalInfo> {
        caller.require(Privilege::Admin, &Resource::Catalog)?;
        let p = store::create_principal(&self.shared.db, name, kind, self.now_ms()).await?;
        info!(principal = name, by = ?caller, "created principal");
        Ok(p)
    }

    /// Every principal; needs `admin` on the catalog.
    pub async fn list_principals(&self, caller: &Caller) -> Result<Vec<PrincipalInfo>> {
        caller.require(Privilege::Admin, &Resource::Catalog)?;
        store::list_principals(&self.shared.db).await
    }

    /// Drops a principal with its tokens and grants; needs `admin` on the catalog. A
    /// principal cannot drop itself (so the last admin is not lost by a slip).
    pub async fn drop_principal(&self, caller: &Caller, name: &str) -> Result<()> {
        caller.require(Privilege::Admin, &Resource::Catalog)?;
        if caller.principal() == Some(name) {
            return Err(Error::FailedPrecondition(format!(
                "{name} cannot drop itself: drop it as another admin"
            )));
        }
        store::drop_principal(&self.shared.db, name).await?;
        info!(principal = name, by = ?caller, "dropped principal");
        Ok(())
    }

    /// Whether the caller may manage `principal`'s tokens: its own, or any as an admin of
    /// the catalog.
    fn require_self_or_admin(&self, caller: &Caller, principal: &str) -> Result<()> {
        if caller.principal() == Some(principal) {
            return Ok(());
        }
        caller.require(Privilege::Admin, &Resource::Catalog)
    }

    /// A new token of `principal`, valid for `ttl` (`None`: until revoked); the caller's
    /// own, or anyone's as an admin of the catalog.
    pub async fn create_token(
        &self,
        caller: &Caller,
        principal: &str,
        ttl: Option<Duration>,
    ) -> Result<IssuedToken> {
        self.require_self_or_admin(caller, principal)?;
        let t = store::issue_token(
            &self.shared.db,
            &self.shared.env,
            principal,
            "token",
            ttl.map(millis),
            None,
        )
        .await?;
        info!(principal, token_id = %t.info.token_id, by = ?caller, "created token");
        Ok(t)
    }

    /// Unexpired tokens of `principal` (every principal's when `None`, for an admin).
    pub async fn list_tokens(
        &self,
        caller: &Caller,
        principal: Option<&str>,
    ) -> Result<Vec<TokenInfo>> {
        match principal {
            Some(p) => self.require_self_or_admin(caller, p)?,
            None => caller.require(Privilege::Admin, &Resource::Catalog)?,
        }
        store::list_tokens(&self.shared.db, principal, self.now_ms()).await
    }

    /// Revokes a token (by the id listings show), and every token exchanged from it: the
    /// caller's own, or any as an admin.
    pub async fn revoke_token(&self, caller: &Caller, token_id: &str) -> Result<()> {
        let owner = store::token_owner(&self.shared.db, token_id).await?;
        self.require_self_or_admin(caller, &owner)?;
        store::revoke_token(&self.shared.db, token_id).await?;
        info!(token_id, principal = owner, by = ?caller, "revoked token");
        Ok(())
    }

    /// Grants a privilege; needs `admin` on the resource (or above it).
    pub async fn grant(&self, caller: &Caller, grant: &Grant) -> Result<()> {
        grant.on.validate()?;
        caller.require(Privilege::Admin, &grant.on)?;
        store::grant(&self.shared.db, grant).await?;
        info!(principal = grant.principal, privilege = %grant.privilege, on = %grant.on, by = ?caller, "granted");
        Ok(())
    }

    /// Revokes a privilege; needs `admin` on the resource. `NotFound` when not held.
    pub async fn revoke(&self, caller: &Caller, grant: &Grant) -> Result<()> {
        grant.on.validate()?;
        caller.require(Privilege::Admin, &grant.on)?;
        store::revoke(&self.shared.db, grant).await?;
        info!(principal = grant.principal, privilege = %grant.privilege, on = %grant.on, by = ?caller, "revoked");
        Ok(())
    }

    /// Grants of `principal` (the caller's own when `None`; every principal's with `all`).
    /// Anyone may list its own; others' need `admin` on the catalog.
    pub async fn list_grants(
        &self,
        caller: &Caller,
        principal: Option<&str>,
    ) -> Result<Vec<Grant>> {
        match principal.or(caller.principal()) {
            Some(p) => {
                self.require_self_or_admin(caller, p)?;
                store::grants(&self.shared.db, Some(p)).await
            }
            // Authentication off, no principal named: every grant.
            None => store::grants(&self.shared.db, None).await,
        }
    }

    /// OAuth2 client credentials: `client_id` is a principal's name and `client_secret` one
    /// of its tokens; the answer is a new token valid for [`OAUTH_TOKEN_TTL`].
    /// `Unauthenticated` when the pair does not match (the reason does not say which part).
    pub async fn exchange_client_credentials(
        &self,
        client_id: &str,
        client_secret: &Secret,
    ) -> Result<IssuedToken> {
        match store::token_origin(&self.shared.db, client_secret, self.now_ms()).await? {
            Some((principal, root)) if principal == client_id => {
                self.issue_oauth(&principal, &root).await
            }
            _ => Err(Error::Unauthenticated(
                "the client id and secret do not match a principal and one of its tokens".into(),
            )),
        }
    }

    /// OAuth2 token exchange (what a client sends to refresh): a valid token of any kind
    /// for a new one of [`OAUTH_TOKEN_TTL`]. Revoking the original token revokes every
    /// token exchanged from it.
    ///
    /// A subject token the identity provider claims (a JWT) is exchanged for a Firn token
    /// of its principal that expires no later than it does; revoking that token is the only
    /// way to end it early (the provider's token is not Firn's to revoke).
    pub async fn exchange_token(&self, subject: &Secret) -> Result<IssuedToken> {
        if let Some((provider, secret)) = self.provider_of(Some(subject)) {
            let (_, verified) = self.vouched(provider, secret).await?;
            let now = self.now_ms();
            let ttl = verified
                .expires_at_ms
                .map_or(millis(OAUTH_TOKEN_TTL), |at| {
                    (at - now).clamp(1, millis(OAUTH_TOKEN_TTL))
                });
            return store::issue_token(
                &self.shared.db,
                &self.shared.env,
                &verified.principal,
                "oauth",
                Some(ttl),
                None,
            )
            .await;
        }
        match store::token_origin(&self.shared.db, subject, self.now_ms()).await? {
            Some((principal, root)) => self.issue_oauth(&principal, &root).await,
            None => Err(Error::Unauthenticated(
                "the subject token is unknown, expired or revoked".into(),
            )),
        }
    }

    async fn issue_oauth(&self, principal: &str, root: &str) -> Result<IssuedToken> {
        store::issue_token(
            &self.shared.db,
            &self.shared.env,
            principal,
            "oauth",
            Some(millis(OAUTH_TOKEN_TTL)),
            Some(root),
        )
        .await
    }
}
