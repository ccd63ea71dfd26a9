//! The one place that talks to image registries (the distribution API,
//! `/v2/`), over `reqwest` with rustls.
//!
//! Why a small client of its own rather than `oci-client`: a push here is
//! five requests — `HEAD` a blob, `POST` an upload (or a cross-repository
//! mount), a monolithic `PUT` of the blob streamed from its file with a
//! `Content-Length`, and a `PUT` of nixpack's exact manifest bytes — and
//! nixpack needs each of them streamed and mapped to an error that says
//! what to do next. `oci-client` buffers a blob in memory for a
//! monolithic push (its streaming push is chunked `PATCH`es) and wraps
//! HTTP statuses in its own errors; the protocol parts it would save
//! (challenges, token requests) are a few dozen lines in [`auth`].
//!
//! Authentication is set up once per push, before any upload: `GET /v2/`;
//! a `401` carries a `WWW-Authenticate` challenge — `Basic` (send the
//! user and password with every request, as Debian's `docker-registry`
//! with htpasswd wants) or `Bearer` (ask its realm for a token scoped to
//! `repository:NAME:pull,push`, plus `pull` on a repository blobs are
//! mounted from). A token that expires mid-push is fetched again and the
//! request repeated once (uploads reopen their file).
//!
//! Plain HTTP only for loopback registries (127.0.0.0/8, ::1, localhost)
//! or with `--insecure`, as Docker does.

pub mod auth;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::TryStreamExt;
use miette::Diagnostic;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use thiserror::Error;

pub use auth::{Credentials, Source};

use crate::oci::{Digest, ImageTag};

/// The media type of nixpack's manifests.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The media type of an image index (a referrers tag names one).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Something a registry refused, or could not be reached for.
#[derive(Debug, Error, Diagnostic)]
#[non_exhaustive]
pub enum RegistryError {
    /// No answer (connection refused, DNS, TLS).
    #[error("cannot reach the registry {registry} at {url}: {reason}")]
    #[diagnostic(code(nixpack::registry::unreachable))]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// The URL tried.
        url: String,
        /// What the client said (with its causes).
        reason: String,
        /// What to check.
        #[help]
        help: String,
    },
    /// 401: no credentials, or the registry refused them.
    #[error("the registry {registry} wants credentials to push to {repository}{}", match .source_name { Some(s) => format!(" and refused those from {s}"), None => String::new() })]
    #[diagnostic(code(nixpack::registry::unauthorized))]
    Unauthorized {
        /// `host[:port]`.
        registry: String,
        /// The repository.
        repository: String,
        /// Where the refused credentials came from (none sent: `None`).
        source_name: Option<String>,
        /// What to do.
        #[help]
        help: String,
    },
    /// 403: the account may not push there.
    #[error("the registry {registry} denies pushing to {repository}: {message}")]
    #[diagnostic(
        code(nixpack::registry::denied),
        help("the account has no push access to this repository: check its permissions on the registry, or push to a repository it owns (`nixpack push REF`)")
    )]
    Denied {
        /// `host[:port]`.
        registry: String,
        /// The repository.
        repository: String,
        /// What the registry said.
        message: String,
    },
    /// 404 on an API path.
    #[error("the registry {registry} answered 404 Not Found for {url}: {message}")]
    #[diagnostic(
        code(nixpack::registry::not_found),
        help("check the registry host and repository name (an image name may start with a registry, like 127.0.0.1:5000/team/app), and that the server is an OCI registry")
    )]
    NotFound {
        /// `host[:port]`.
        registry: String,
        /// The URL.
        url: String,
        /// What the registry said.
        message: String,
    },
    /// Any other unexpected answer.
    #[error("the registry {registry}: {action} answered {status}: {message}")]
    #[diagnostic(code(nixpack::registry::status))]
    Status {
        /// `host[:port]`.
        registry: String,
        /// What nixpack was doing.
        action: String,
        /// The HTTP status.
        status: u16,
        /// What the registry said.
        message: String,
    },
    /// The registry stored other bytes than nixpack sent.
    #[error("the registry {registry} stored {what} as {found}, nixpack sent {expected}")]
    #[diagnostic(code(nixpack::registry::digest))]
    DigestMismatch {
        /// `host[:port]`.
        registry: String,
        /// Which blob or manifest.
        what: String,
        /// nixpack's digest.
        expected: Digest,
        /// The registry's.
        found: String,
    },
    /// A local file could not be read.
    #[error("{path}: {reason}")]
    #[diagnostic(code(nixpack::registry::io))]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        reason: String,
    },
    /// The credentials could not be looked up.
    #[error("looking up credentials for {registry}: {source}")]
    #[diagnostic(
        code(nixpack::registry::credentials),
        help("fix the file or helper named above, or pass --username USER --password-stdin")
    )]
    Credentials {
        /// `host[:port]`.
        registry: String,
        /// The cause.
        source: auth::CredentialsError,
    },
}

/// Where an image goes: a registry, a repository on it and a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The registry as written in the name (`127.0.0.1:5000`), or
    /// `docker.io` for a name without one; credentials are stored under it.
    pub registry: String,
    /// The repository path (`team/app`; `library/app` on Docker Hub).
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// `http` or `https`.
    pub scheme: &'static str,
}

impl Target {
    /// The registry, repository and tag of `tag`. Loopback registries
    /// speak plain HTTP, others HTTPS unless `insecure`.
    pub fn new(tag: &ImageTag, insecure: bool) -> Target {
        let normalized = tag.normalized();
        let without_tag = &normalized[..normalized.len() - tag.tag.as_str().len() - 1];
        let (registry, repository) = without_tag
            .split_once('/')
            .expect("a normalised name has a domain");
        let scheme = if insecure || is_loopback(registry) {
            "http"
        } else {
            "https"
        };
        Target {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.tag.as_str().to_owned(),
            scheme,
        }
    }

    /// The host the API is served at (Docker Hub's is not `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// `SCHEME://HOST/v2/`.
    pub fn base(&self) -> String {
        format!("{}://{}/v2/", self.scheme, self.api_host())
    }

    /// `…/v2/REPOSITORY/blobs/DIGEST`.
    pub fn blob_url(&self, digest: &Digest) -> String {
        format!("{}{}/blobs/{digest}", self.base(), self.repository)
    }

    /// `…/v2/REPOSITORY/blobs/uploads/`, mounting `digest` from `from`
    /// when given.
    pub fn upload_url(&self, mount: Option<(&Digest, &str)>) -> String {
        let base = format!("{}{}/blobs/uploads/", self.base(), self.repository);
        match mount {
            Some((d, from)) => format!("{base}?mount={d}&from={from}"),
            None => base,
        }
    }

    /// `…/v2/REPOSITORY/manifests/REFERENCE` (a tag or a digest).
    pub fn manifest_url(&self, reference: &str) -> String {
        format!("{}{}/manifests/{reference}", self.base(), self.repository)
    }

    /// `REGISTRY/REPOSITORY:TAG`, as `docker pull` takes it.
    pub fn display(&self) -> String {
        format!("{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

/// Whether `registry` (`host[:port]`) is this machine.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || registry.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What became of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The registry had it (`HEAD`).
    Present,
    /// Mounted from another repository of the registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// The bytes of a blob to upload.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// A file, streamed.
    File(PathBuf),
    /// Small bytes (the config).
    Bytes(bytes::Bytes),
}

/// A connection to one repository of one registry, authenticated.
pub struct Client {
    http: reqwest::Client,
    target: Target,
    credentials: Option<(Credentials, String)>,
    /// The `Authorization` header to send; replaced when a token expires.
    authorization: tokio::sync::RwLock<Option<HeaderValue>>,
    /// A repository of the same registry blobs may be mounted from.
    mount_from: Option<String>,
}

impl Client {
    /// Connects to `target` and authenticates: `credentials` when given
    /// (with where they came from), else whatever `config.json` or its
    /// helpers hold for the registry. `mount_from` is a repository of the
    /// same registry to mount blobs from (its pull scope is asked for).
    pub async fn connect(
        target: Target,
        credentials: Option<(Credentials, Source)>,
        mount_from: Option<String>,
    ) -> Result<Client, RegistryError> {
        let credentials = match credentials {
            Some(c) => Some(c),
            None => match auth::config_dir() {
                Some(dir) => auth::DockerConfig::load(&dir)
                    .and_then(|c| c.lookup(&target.registry))
                    .map_err(|source| RegistryError::Credentials {
                        registry: target.registry.clone(),
                        source,
                    })?,
                None => None,
            },
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("nixpack/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| RegistryError::Unreachable {
                registry: target.registry.clone(),
                url: target.base(),
                reason: chain(&e),
                help: "the HTTP client could not start (TLS roots?)".into(),
            })?;
        let client = Client {
            http,
            credentials: credentials.map(|(c, s)| (c, s.to_string())),
            target,
            authorization: tokio::sync::RwLock::new(None),
            mount_from: mount_from.filter(|m| !m.is_empty()),
        };
        client.login().await?;
        Ok(client)
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// `GET /v2/`, then whatever its challenge asks for; checks that the
    /// registry takes the result.
    async fn login(&self) -> Result<(), RegistryError> {
        let url = self.target.base();
        let resp = self.raw(Method::GET, &url, None).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return self
                .expect(resp, "GET /v2/", &[StatusCode::OK])
                .await
                .map(drop);
        }
        self.answer(&resp).await?;
        let auth = self.authorization.read().await.clone();
        let resp = self.raw(Method::GET, &url, auth).await?;
        self.expect(resp, "GET /v2/", &[StatusCode::OK])
            .await
            .map(drop)
    }

    /// Sets the `Authorization` header that `resp`'s challenge asks for.
    async fn answer(&self, resp: &reqwest::Response) -> Result<(), RegistryError> {
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::parse_challenge);
        let value = match (challenge, &self.credentials) {
            (
                Some(auth::Challenge::Basic),
                Some((Credentials::Basic { username, password }, _)),
            ) => Credentials::basic_header(username, password),
            (Some(auth::Challenge::Bearer { realm, service, .. }), creds) => {
                format!(
                    "Bearer {}",
                    self.token(&realm, service.as_deref(), creds).await?
                )
            }
            _ => return Err(self.unauthorized()),
        };
        let value = HeaderValue::from_str(&value).map_err(|_| self.unauthorized())?;
        *self.authorization.write().await = Some(value);
        Ok(())
    }

    /// A token from the `realm` of a Bearer challenge, for push and pull
    /// on the repository (and pull on `mount_from`).
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        creds: &Option<(Credentials, String)>,
    ) -> Result<String, RegistryError> {
        let mut scopes = vec![format!("repository:{}:pull,push", self.target.repository)];
        if let Some(from) = &self.mount_from {
            scopes.push(format!("repository:{from}:pull"));
        }
        let mut url = Url::parse(realm).map_err(|e| self.unreachable(realm, e.to_string()))?;
        let req = match creds {
            Some((Credentials::IdentityToken(refresh), _)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", "nixpack".to_owned()),
                    ("scope", scopes.join(" ")),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_owned()));
                }
                self.http.post(url).form(&form)
            }
            other => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in &scopes {
                        q.append_pair("scope", s);
                    }
                }
                let req = self.http.get(url);
                match other {
                    Some((Credentials::Basic { username, password }, _)) => {
                        req.basic_auth(username, Some(password))
                    }
                    _ => req,
                }
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| self.unreachable(realm, chain(&e)))?;
        if matches!(
            resp.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(self.unauthorized());
        }
        let resp = self
            .expect(resp, "asking for a token", &[StatusCode::OK])
            .await?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(realm, chain(&e)))?;
        let t: Token = serde_json::from_slice(&body).map_err(|e| RegistryError::Status {
            registry: self.target.registry.clone(),
            action: "asking for a token".into(),
            status: 200,
            message: format!("not a token: {e}"),
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.unauthorized())
    }

    /// One request with the current authorization; on `401` the
    /// authorization is renewed (an expired token) and the request sent
    /// once more. `body` is called for each attempt.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: impl Fn() -> Result<Option<reqwest::Body>, RegistryError>,
    ) -> Result<reqwest::Response, RegistryError> {
        for attempt in 0..2 {
            let mut req = self
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            if let Some(a) = self.authorization.read().await.clone() {
                req = req.header(AUTHORIZATION, a);
            }
            if let Some(b) = body()? {
                req = req.body(b);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| self.unreachable(url, chain(&e)))?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                self.answer(&resp).await?;
                continue;
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                return Err(self.unauthorized());
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn raw(
        &self,
        method: Method,
        url: &str,
        auth: Option<HeaderValue>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut req = self.http.request(method, url);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        req.send()
            .await
            .map_err(|e| self.unreachable(url, chain(&e)))
    }

    /// `resp` when its status is one of `ok`, else the error it means.
    async fn expect(
        &self,
        resp: reqwest::Response,
        action: &str,
        ok: &[StatusCode],
    ) -> Result<reqwest::Response, RegistryError> {
        let status = resp.status();
        if ok.contains(&status) {
            return Ok(resp);
        }
        let url = resp.url().to_string();
        let message = error_message(&resp.text().await.unwrap_or_default());
        let registry = self.target.registry.clone();
        Err(match status {
            StatusCode::UNAUTHORIZED => self.unauthorized(),
            StatusCode::FORBIDDEN => RegistryError::Denied {
                registry,
                repository: self.target.repository.clone(),
                message,
            },
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                registry,
                url,
                message,
            },
            s => RegistryError::Status {
                registry,
                action: action.to_owned(),
                status: s.as_u16(),
                message,
            },
        })
    }

    fn unauthorized(&self) -> RegistryError {
        let host = &self.target.registry;
        let login = if host == "docker.io" {
            "docker login".to_owned()
        } else {
            format!("docker login {host}")
        };
        let (source_name, help) = match &self.credentials {
            None => (
                None,
                format!("log in with `{login}` (nixpack reads Docker's config.json and its credential helpers), or pass --username USER --password-stdin"),
            ),
            Some((_, s)) => (
                Some(s.clone()),
                format!("the user or password is wrong, or the account may not push here: log in again with `{login}`, or pass --username USER --password-stdin"),
            ),
        };
        RegistryError::Unauthorized {
            registry: host.clone(),
            repository: self.target.repository.clone(),
            source_name,
            help,
        }
    }

    fn unreachable(&self, url: &str, reason: String) -> RegistryError {
        let host = &self.target.registry;
        let help = if self.target.scheme == "https" {
            format!("check that a registry serves HTTPS at {host}; if it serves plain HTTP, pass --insecure")
        } else {
            format!("check that a registry listens at {host} (nixpack spoke plain HTTP to it)")
        };
        RegistryError::Unreachable {
            registry: host.clone(),
            url: url.to_owned(),
            reason,
            help,
        }
    }

    /// The size of `digest` when the repository has it.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        let url = self.target.blob_url(digest);
        let resp = self
            .send(Method::HEAD, &url, HeaderMap::new(), || Ok(None))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self
            .expect(resp, "HEAD of a blob", &[StatusCode::OK])
            .await?;
        Ok(resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// Makes sure the repository holds `digest`: `HEAD` first; else a
    /// cross-repository mount when a repository to mount from is known;
    /// else a monolithic upload streamed from `source`, counted into
    /// `sent` as it goes.
    pub async fn ensure_blob(
        &self,
        digest: &Digest,
        size: u64,
        source: &BlobSource,
        sent: &Arc<AtomicU64>,
    ) -> Result<BlobOutcome, RegistryError> {
        if self.blob_size(digest).await?.is_some() {
            return Ok(BlobOutcome::Present);
        }
        let mount = self.mount_from.as_deref().map(|from| (digest, from));
        let url = self.target.upload_url(mount);
        let resp = self
            .send(Method::POST, &url, HeaderMap::new(), || Ok(None))
            .await?;
        if mount.is_some() && resp.status() == StatusCode::CREATED {
            return Ok(BlobOutcome::Mounted);
        }
        let resp = self
            .expect(resp, "starting an upload", &[StatusCode::ACCEPTED])
            .await?;
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Status {
                registry: self.target.registry.clone(),
                action: "starting an upload".into(),
                status: resp.status().as_u16(),
                message: "no Location header".into(),
            })?;
        let mut put = Url::parse(&url)
            .and_then(|base| base.join(location))
            .map_err(|e| self.unreachable(location, e.to_string()))?;
        put.query_pairs_mut().append_pair("digest", digest.as_str());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let counted = Arc::new(AtomicU64::new(0));
        let body = || -> Result<Option<reqwest::Body>, RegistryError> {
            // A repeated attempt starts the count of this blob over.
            sent.fetch_sub(counted.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            Ok(Some(match source {
                BlobSource::Bytes(b) => {
                    sent.fetch_add(b.len() as u64, Ordering::Relaxed);
                    counted.store(b.len() as u64, Ordering::Relaxed);
                    reqwest::Body::from(b.clone())
                }
                BlobSource::File(path) => file_body(path, sent.clone(), counted.clone())?,
            }))
        };
        let resp = self.send(Method::PUT, put.as_str(), headers, body).await?;
        let resp = self
            .expect(resp, "uploading a blob", &[StatusCode::CREATED])
            .await?;
        check_digest(&self.target, &resp, digest, "a blob")?;
        Ok(BlobOutcome::Uploaded)
    }

    /// The digest of the manifest `reference` (a tag) points at, if any.
    pub async fn manifest_digest(&self, reference: &str) -> Result<Option<String>, RegistryError> {
        let url = self.target.manifest_url(reference);
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
        );
        let resp = self.send(Method::HEAD, &url, headers, || Ok(None)).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self
            .expect(resp, "HEAD of a manifest", &[StatusCode::OK])
            .await?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    /// `PUT`s `manifest` (these exact bytes) under the target's tag.
    pub async fn put_manifest(
        &self,
        manifest: &[u8],
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let tag = self.target.tag.clone();
        self.put_manifest_as(&tag, MANIFEST_MEDIA_TYPE, manifest, digest, "the manifest")
            .await
            .map(drop)
    }

    /// `PUT`s `manifest` (these exact bytes, of `media_type`) under
    /// `reference` (a tag, or its own digest). Answers whether the
    /// registry processed a `subject` in it (an `OCI-Subject` header: it
    /// serves the referrers API, so no referrers tag is needed).
    pub async fn put_manifest_as(
        &self,
        reference: &str,
        media_type: &'static str,
        manifest: &[u8],
        digest: &Digest,
        what: &str,
    ) -> Result<bool, RegistryError> {
        let url = self.target.manifest_url(reference);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
        let bytes = bytes::Bytes::copy_from_slice(manifest);
        let resp = self
            .send(Method::PUT, &url, headers, || {
                Ok(Some(reqwest::Body::from(bytes.clone())))
            })
            .await?;
        let resp = self
            .expect(resp, &format!("putting {what}"), &[StatusCode::CREATED])
            .await?;
        check_digest(&self.target, &resp, digest, what)?;
        Ok(resp.headers().contains_key("oci-subject"))
    }

    /// The bytes of the manifest `reference` names, asked for as
    /// `media_type`; `None` when the registry has none.
    pub async fn get_manifest(
        &self,
        reference: &str,
        media_type: &'static str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let url = self.target.manifest_url(reference);
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static(media_type),
        );
        let resp = self.send(Method::GET, &url, headers, || Ok(None)).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self
            .expect(resp, "getting a manifest", &[StatusCode::OK])
            .await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(&url, chain(&e)))?;
        Ok(Some(body.to_vec()))
    }
}

/// A body streamed from `path`, counting bytes into `sent` and `counted`.
fn file_body(
    path: &Path,
    sent: Arc<AtomicU64>,
    counted: Arc<AtomicU64>,
) -> Result<reqwest::Body, RegistryError> {
    let file = std::fs::File::open(path).map_err(|e| RegistryError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 1 << 20)
            .inspect_ok(move |chunk| {
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// Checks the `Docker-Content-Digest` a registry answered with, when it
/// sent one.
fn check_digest(
    target: &Target,
    resp: &reqwest::Response,
    digest: &Digest,
    what: &str,
) -> Result<(), RegistryError> {
    match resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        Some(found) if found != digest.as_str() => Err(RegistryError::DigestMismatch {
            registry: target.registry.clone(),
            what: what.to_owned(),
            expected: digest.clone(),
            found: found.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The messages of a registry's `{"errors":[{"code","message"}]}` body,
/// else the body itself (shortened).
fn error_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_str::<Errors>(body) {
        let parts: Vec<String> = e
            .errors
            .into_iter()
            .map(|e| match (e.code, e.message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (c, m) => c.or(m).unwrap_or_default(),
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let body = body.trim();
    if body.is_empty() {
        "(no message)".into()
    } else {
        body.chars().take(300).collect()
    }
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ImageRef;

    fn target(r: &str, insecure: bool) -> Target {
        Target::new(
            &ImageTag::from_ref(&ImageRef::parse(r).unwrap()).unwrap(),
            insecure,
        )
    }

    #[test]
    fn references_become_registry_urls() {
        let t = target("127.0.0.1:5000/team/app:t1", false);
        assert_eq!(t.registry, "127.0.0.1:5000");
        assert_eq!(t.repository, "team/app");
        assert_eq!(t.base(), "http://127.0.0.1:5000/v2/");
        assert_eq!(
            t.manifest_url("t1"),
            "http://127.0.0.1:5000/v2/team/app/manifests/t1"
        );
        let d = Digest::of(b"x");
        assert_eq!(
            t.blob_url(&d),
            format!("http://127.0.0.1:5000/v2/team/app/blobs/{d}")
        );
        assert_eq!(
            t.upload_url(Some((&d, "other/app"))),
            format!("http://127.0.0.1:5000/v2/team/app/blobs/uploads/?mount={d}&from=other/app")
        );
        assert_eq!(t.display(), "127.0.0.1:5000/team/app:t1");

        let hub = target("app", false);
        assert_eq!(
            (
                hub.registry.as_str(),
                hub.repository.as_str(),
                hub.tag.as_str()
            ),
            ("docker.io", "library/app", "latest")
        );
        assert_eq!(hub.base(), "https://registry-1.docker.io/v2/");
        let hub = target("team/app:1", false);
        assert_eq!(hub.repository, "team/app");

        let remote = target("registry.example.com/app:2", false);
        assert_eq!(remote.base(), "https://registry.example.com/v2/");
        let remote = target("registry.example.com:8443/a/b/c:2", true);
        assert_eq!(remote.base(), "http://registry.example.com:8443/v2/");
        assert_eq!(remote.repository, "a/b/c");
        assert_eq!(target("localhost:5000/app", false).scheme, "http");
        assert_eq!(target("localhost/app", false).scheme, "http");
    }

    #[test]
    fn only_loopback_registries_are_plain_http_by_default() {
        for host in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost",
            "LOCALHOST:80",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "10.0.0.1:5000",
            "registry.example.com",
            "localhost.example.com:5000",
            "[::2]:5000",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn registry_error_bodies_become_messages() {
        assert_eq!(
            error_message(
                r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#
            ),
            "DENIED: requested access to the resource is denied"
        );
        assert_eq!(error_message(""), "(no message)");
        assert_eq!(error_message("plain words\n"), "plain words");
    }
}
