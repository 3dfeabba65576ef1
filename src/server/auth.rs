//! Logging in: the authentication method the server was started with
//! (`trust`, `md5` or `scram-sha-256`), checked against the roles' stored
//! password verifiers, and the TLS acceptor for `sslmode=require` clients.
//!
//! pgwire runs the exchanges (SCRAM's messages, md5's salted hash); this
//! module answers their one question, "what does this user's password
//! look like", from [`crate::catalog::privileges`].

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::md5pass::Md5PasswordAuthStartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::catalog::Catalog;
use crate::catalog::privileges::Role;

/// How clients prove who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// Any user name is accepted without a password (local development).
    Trust,
    /// Postgres's md5 challenge (for old clients).
    Md5,
    /// SCRAM-SHA-256, as Postgres's default `password_encryption`.
    ScramSha256,
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "trust" => Ok(AuthMethod::Trust),
            "md5" => Ok(AuthMethod::Md5),
            "scram-sha-256" | "scram" | "password" => Ok(AuthMethod::ScramSha256),
            other => Err(format!("unknown authentication method \"{other}\" (trust, md5 or scram-sha-256)")),
        }
    }
}

fn user_of(login: &LoginInfo) -> String {
    login.user().unwrap_or_default().to_string()
}

fn not_permitted(user: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        "28000".to_string(),
        format!("role \"{user}\" is not permitted to log in"),
    )))
}

/// A role that may log in with a password, or the error a client gets.
/// An unknown user fails as a wrong password does, so the answer does not
/// tell which names exist.
fn login_role(catalog: &Catalog, user: &str) -> PgWireResult<Role> {
    let Some(role) = catalog.access.role(user) else { return Err(PgWireError::InvalidPassword(user.to_string())) };
    if !role.login {
        return Err(not_permitted(user));
    }
    if role.password.is_none() {
        return Err(PgWireError::InvalidPassword(user.to_string()));
    }
    Ok(role)
}

/// The SCRAM salted password of the user's role.
pub struct ScramSource {
    catalog: Arc<Catalog>,
}

impl Debug for ScramSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSource")
    }
}

#[async_trait]
impl AuthSource for ScramSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = user_of(login);
        let role = login_role(&self.catalog, &user)?;
        let verifier = role.password.ok_or_else(|| PgWireError::InvalidPassword(user.clone()))?;
        Ok(Password::new(Some(verifier.scram_salt), verifier.scram_salted_password))
    }
}

/// What the client's md5 answer must be for a fresh random salt:
/// `md5` ++ hex(md5(hex(md5(password ++ user)) ++ salt)).
pub struct Md5Source {
    catalog: Arc<Catalog>,
}

impl Debug for Md5Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Md5Source")
    }
}

#[async_trait]
impl AuthSource for Md5Source {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = user_of(login);
        let role = login_role(&self.catalog, &user)?;
        let verifier = role.password.ok_or_else(|| PgWireError::InvalidPassword(user.clone()))?;
        let salt: [u8; 4] = rand::random();
        let mut salted = verifier.md5.into_bytes();
        salted.extend_from_slice(&salt);
        let expected = format!("md5{:x}", md5::compute(salted));
        Ok(Password::new(Some(salt.to_vec()), expected.into_bytes()))
    }
}

/// Trust: no password, but a role marked NOLOGIN still may not log in.
pub struct TrustStartup {
    connections: Arc<ConnectionManager>,
    catalog: Arc<Catalog>,
}

#[async_trait]
impl NoopStartupHandler for TrustStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }

    async fn post_startup<C>(&self, client: &mut C, _message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = client.metadata().get(pgwire::api::METADATA_USER).cloned().unwrap_or_default();
        match self.catalog.access.role(&user) {
            Some(role) if !role.login => Err(not_permitted(&user)),
            _ => Ok(()),
        }
    }
}

/// One connection's startup handler (SCRAM's keeps the exchange's state,
/// so each connection gets a new one), after the connection limit.
pub struct Startup {
    method: StartupMethod,
    open: Arc<super::connection::ConnectionCount>,
}

enum StartupMethod {
    Trust(TrustStartup),
    Md5(Md5PasswordAuthStartupHandler<Md5Source, DefaultServerParameterProvider>),
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

impl Startup {
    pub fn new(
        method: AuthMethod,
        catalog: &Arc<Catalog>,
        connections: &Arc<ConnectionManager>,
        open: &Arc<super::connection::ConnectionCount>,
    ) -> Self {
        Self { method: StartupMethod::new(method, catalog, connections), open: open.clone() }
    }
}

impl StartupMethod {
    fn new(method: AuthMethod, catalog: &Arc<Catalog>, connections: &Arc<ConnectionManager>) -> Self {
        use StartupMethod as Startup;
        let parameters = Arc::new(DefaultServerParameterProvider::default());
        match method {
            AuthMethod::Trust => {
                Startup::Trust(TrustStartup { connections: connections.clone(), catalog: catalog.clone() })
            }
            AuthMethod::Md5 => Startup::Md5(
                Md5PasswordAuthStartupHandler::new(Arc::new(Md5Source { catalog: catalog.clone() }), parameters)
                    .with_connection_manager(connections.clone()),
            ),
            AuthMethod::ScramSha256 => {
                let mut scram = ScramAuth::new(Arc::new(ScramSource { catalog: catalog.clone() }));
                scram.set_iterations(crate::catalog::privileges::SCRAM_ITERATIONS);
                Startup::Scram(
                    SASLAuthStartupHandler::new(parameters)
                        .with_scram(scram)
                        .with_connection_manager(connections.clone()),
                )
            }
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Over the limit, a new connection is refused before it logs in,
        // as PostgreSQL does.
        if matches!(message, PgWireFrontendMessage::Startup(_)) && self.open.over_limit() {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".to_string(),
                crate::error::sqlstate::TOO_MANY_CONNECTIONS.to_string(),
                "sorry, too many clients already".to_string(),
            ))));
        }
        match &self.method {
            StartupMethod::Trust(handler) => handler.on_startup(client, message).await,
            StartupMethod::Md5(handler) => handler.on_startup(client, message).await,
            StartupMethod::Scram(handler) => handler.on_startup(client, message).await,
        }
    }
}

/// A TLS acceptor for the PEM certificate chain and private key (PKCS#8,
/// PKCS#1 or SEC1).
pub fn tls_acceptor(cert: &Path, key: &Path) -> std::io::Result<pgwire::tokio::tokio_rustls::TlsAcceptor> {
    use pgwire::tokio::tokio_rustls::rustls;
    use std::io::{BufReader, Error, ErrorKind};
    // Both ring and aws-lc are linked in (through different crates), so
    // rustls cannot pick a provider by itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let open = |path: &Path| {
        std::fs::File::open(path)
            .map(BufReader::new)
            .map_err(|e| Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))
    };
    let certs = rustls_pemfile::certs(&mut open(cert)?).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(Error::new(ErrorKind::InvalidInput, format!("no certificate in {}", cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut open(key)?)?
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("no private key in {}", key.display())))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("TLS certificate and key: {e}")))?;
    Ok(pgwire::tokio::tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
