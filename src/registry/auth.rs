//! Who nixpack is to a registry: credentials from Docker's `config.json`
//! (and the credential helpers it names) or from the command line, and
//! the `WWW-Authenticate` challenges registries answer with.
//!
//! Reading `config.json` is a few lines of JSON; the part that matters is
//! finding the entry for a host the way `docker login` wrote it (a bare
//! `host:port`, or a URL such as `https://index.docker.io/v1/`) and running
//! `docker-credential-<helper> get` with the server on stdin. It is kept
//! here, over plain `std::process`, so that it reads an explicit folder
//! (tests use a temporary one, never the process environment).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

/// What to authenticate with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or access token used as one).
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: String,
    },
    /// An identity (refresh) token, as `docker login` stores for some
    /// registries: traded for an access token at the token endpoint.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

impl Credentials {
    /// `Basic base64(user:password)`.
    pub fn basic_header(username: &str, password: &str) -> String {
        let raw = format!("{username}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Where the credentials came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--username` and `--password-stdin`.
    CommandLine,
    /// `auths` in this `config.json`.
    ConfigFile(PathBuf),
    /// `docker-credential-<helper>`.
    Helper(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::CommandLine => f.write_str("--username/--password-stdin"),
            Source::ConfigFile(p) => write!(f, "{}", p.display()),
            Source::Helper(h) => write!(f, "docker-credential-{h}"),
        }
    }
}

/// A credentials look-up that failed (not: found none).
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// `config.json` is not JSON of the expected shape.
    #[error("{path}: {reason}")]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A credential helper could not be run or failed.
    #[error("docker-credential-{helper} get: {reason}")]
    Helper {
        /// The helper's suffix.
        helper: String,
        /// What happened.
        reason: String,
    },
}

/// Docker's client configuration: the parts that hold credentials.
#[derive(Debug, Default, Deserialize)]
pub struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(skip)]
    path: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// The registry an image name lives on, as `docker` decides it: the first
/// part of the name when it has a `.` or `:` or is `localhost`, else
/// Docker Hub (`docker.io`).
pub fn registry_of(name: &str) -> &str {
    match name.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The credentials `~/.docker/config.json` (or `$DOCKER_CONFIG`) holds
/// for the registry of the image `name`, for the engine to pull it with.
pub fn for_pull(name: &str) -> Result<Option<Credentials>, CredentialsError> {
    let Some(dir) = config_dir() else {
        return Ok(None);
    };
    Ok(DockerConfig::load(&dir)?
        .lookup(registry_of(name))?
        .map(|(c, _)| c))
}

/// The folder of `config.json`: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(d) => Some(PathBuf::from(d)),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")),
    }
}

/// The key Docker Hub's credentials are stored under.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The host part of a `config.json` key: `https://host:port/v2/` → `host:port`.
fn key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// Whether `registry` (as in an image name; `docker.io` for Docker Hub)
/// is the host a `config.json` key names.
fn key_matches(key: &str, registry: &str) -> bool {
    let host = key_host(key);
    if is_docker_hub(registry) {
        is_docker_hub(host)
    } else {
        host == registry
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

impl DockerConfig {
    /// Reads `dir/config.json`; a missing file is an empty config.
    pub fn load(dir: &Path) -> Result<DockerConfig, CredentialsError> {
        let path = dir.join("config.json");
        let mut config: DockerConfig = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| CredentialsError::BadConfig {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DockerConfig::default(),
            Err(e) => {
                return Err(CredentialsError::BadConfig {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        config.path = path;
        Ok(config)
    }

    /// The credentials for `registry` (`host[:port]`, `docker.io` for
    /// Docker Hub), as Docker looks them up: a `credHelpers` entry for the
    /// host, else the `credsStore`, else `auths`. A helper that knows no
    /// credentials for the host is not an error: `auths` is tried next.
    pub fn lookup(
        &self,
        registry: &str,
    ) -> Result<Option<(Credentials, Source)>, CredentialsError> {
        let server = if is_docker_hub(registry) {
            DOCKER_HUB_KEY
        } else {
            registry
        };
        let helper = self
            .cred_helpers
            .iter()
            .find(|(k, _)| key_matches(k, registry))
            .map(|(_, h)| h)
            .or(self.creds_store.as_ref());
        if let Some(h) = helper.filter(|h| !h.is_empty()) {
            if let Some(c) = run_helper(h, server)? {
                return Ok(Some((c, Source::Helper(h.clone()))));
            }
        }
        // An exact key first, then any key naming the same host.
        let entry = self.auths.get(server).or_else(|| {
            self.auths
                .iter()
                .find(|(k, _)| key_matches(k, registry))
                .map(|(_, e)| e)
        });
        let Some(e) = entry else { return Ok(None) };
        let source = Source::ConfigFile(self.path.clone());
        if let Some(t) = e.identity_token.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some((Credentials::IdentityToken(t.clone()), source)));
        }
        if let (Some(u), Some(p)) = (&e.username, &e.password) {
            return Ok(Some((
                Credentials::Basic {
                    username: u.clone(),
                    password: p.clone(),
                },
                source,
            )));
        }
        let Some(auth) = e.auth.as_ref().filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        let bad = |reason: &str| CredentialsError::BadConfig {
            path: self.path.clone(),
            reason: format!("the `auth` of `{registry}` {reason}"),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("is not base64"))?;
        let text = String::from_utf8(decoded).map_err(|_| bad("is not UTF-8"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| bad("is not base64 of `user:password`"))?;
        Ok(Some((
            Credentials::Basic {
                username: u.to_owned(),
                password: p.to_owned(),
            },
            source,
        )))
    }
}

/// What a helper prints for `get`.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with `server` on stdin. `None`
/// when the helper knows no credentials for it.
fn run_helper(helper: &str, server: &str) -> Result<Option<Credentials>, CredentialsError> {
    let err = |reason: String| CredentialsError::Helper {
        helper: helper.to_owned(),
        reason,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run it ({e}); is it on PATH?")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let said = format!(
            "{}{}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        // The message every helper of docker-credential-helpers prints.
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(err(format!("{} ({})", said, out.status)));
    }
    let a: HelperAnswer =
        serde_json::from_str(stdout.trim()).map_err(|e| err(format!("unexpected output: {e}")))?;
    Ok(Some(if a.username == "<token>" {
        Credentials::IdentityToken(a.secret)
    } else {
        Credentials::Basic {
            username: a.username,
            password: a.secret,
        }
    }))
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`: send the user and password with every request.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`: get a token from `realm`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter, when given.
        service: Option<String>,
        /// The `scope` the registry asked for, when given.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value (one challenge; auth-params
/// as `key=value` or `key="quoted, \"value\""`). `None` for a scheme
/// nixpack does not speak or a Bearer challenge without a realm.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_owned();
        }
        out.insert(key, value);
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_registry_of_a_name_is_docker_s() {
        assert_eq!(registry_of("nixos/nix:2.28"), "docker.io");
        assert_eq!(registry_of("ubuntu"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5001/team/nix:1"), "127.0.0.1:5001");
        assert_eq!(registry_of("ghcr.io/org/nix"), "ghcr.io");
        assert_eq!(registry_of("localhost/nix"), "localhost");
    }

    use super::*;

    #[test]
    fn bearer_challenges_parse_with_quoted_commas_and_any_case() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/app:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:team/app:pull,push".into()),
            })
        );
        let c =
            parse_challenge(r#"bearer Realm="http://127.0.0.1:9/t", error="insufficient_scope""#);
        assert!(
            matches!(c, Some(Challenge::Bearer { realm, service: None, scope: None }) if realm == "http://127.0.0.1:9/t")
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="nixpack-test-auth""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None, "no realm");
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(
            parse_params(r#"a="x\"y", b=plain ,c="""#),
            BTreeMap::from([
                ("a".to_owned(), "x\"y".to_owned()),
                ("b".to_owned(), "plain".to_owned()),
                ("c".to_owned(), String::new()),
            ])
        );
    }

    fn config(json: &str) -> (tempfile::TempDir, DockerConfig) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        let c = DockerConfig::load(dir.path()).unwrap();
        (dir, c)
    }

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn auths_entries_are_found_by_host_however_docker_login_wrote_the_key() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let (_d, c) = config(&format!(
            r#"{{"auths": {{
                "127.0.0.1:5001": {{"auth": "{}"}},
                "https://registry.example.com/v2/": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "ghcr.example": {{"identitytoken": "refresh-me"}},
                "empty.example": {{}}
            }}, "psFormat": "ignored"}}"#,
            b64("nixpack:s3:cr3t"),
            b64("ex:pw"),
            b64("hub:pw")
        ));
        let get = |r: &str| c.lookup(r).unwrap().map(|(c, _)| c);
        assert_eq!(get("127.0.0.1:5001"), Some(basic("nixpack", "s3:cr3t")));
        assert_eq!(get("registry.example.com"), Some(basic("ex", "pw")));
        assert_eq!(get("docker.io"), Some(basic("hub", "pw")));
        assert_eq!(
            get("ghcr.example"),
            Some(Credentials::IdentityToken("refresh-me".into()))
        );
        assert_eq!(get("empty.example"), None);
        assert_eq!(get("127.0.0.1:5000"), None, "the port is part of the host");
        assert!(matches!(
            c.lookup("127.0.0.1:5001").unwrap().unwrap().1,
            Source::ConfigFile(p) if p.ends_with("config.json")
        ));
    }

    #[test]
    fn a_missing_config_is_empty_and_a_broken_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let c = DockerConfig::load(dir.path()).unwrap();
        assert_eq!(c.lookup("127.0.0.1:5000").unwrap(), None);
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let e = DockerConfig::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
        let (_d, c) = config(r#"{"auths": {"h.example": {"auth": "%%%"}}}"#);
        let e = c.lookup("h.example").unwrap_err();
        assert!(e.to_string().contains("not base64"), "{e}");
    }

    #[test]
    fn a_missing_helper_is_an_error_that_names_it() {
        let (_d, c) = config(r#"{"credsStore": "nixpack-no-such-helper"}"#);
        let e = c.lookup("h.example").unwrap_err();
        assert!(
            e.to_string()
                .contains("docker-credential-nixpack-no-such-helper get"),
            "{e}"
        );
    }

    #[test]
    fn basic_header_is_base64_of_user_colon_password() {
        assert_eq!(
            Credentials::basic_header("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(format!("{:?}", basic("u", "secret")), "Basic(u, ***)");
    }
}
