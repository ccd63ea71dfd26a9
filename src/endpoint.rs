//! Which Docker Engine to talk to, decided the way the docker CLI decides:
//!
//! 1. `DOCKER_HOST`, when set (with `DOCKER_TLS_VERIFY` and
//!    `DOCKER_CERT_PATH` for `tcp://`);
//! 2. else the docker context named by `DOCKER_CONTEXT`;
//! 3. else the context named by `currentContext` in
//!    `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`);
//! 4. else the default socket, `unix:///var/run/docker.sock` (or, as the
//!    CLI does, `tcp://localhost:2376` when `DOCKER_TLS_VERIFY` is set).
//!
//! The context named `default` is step 4. Any other context is read from
//! `$DOCKER_CONFIG/contexts/meta/<sha256 of its name>/meta.json`
//! (`Endpoints.docker.Host`, `SkipTLSVerify`) and its TLS files from
//! `contexts/tls/<sha256 of its name>/docker/{ca,cert,key}.pem`.
//!
//! [`resolve`] is a function of the environment variables (passed in, see
//! [`EnvVars`]) and those files; it connects to nothing.

use std::fmt;
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// The default socket of a local engine.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// The variables that choose an engine (empty counts as unset, as for the
/// docker CLI).
#[derive(Debug, Clone, Default)]
pub struct EnvVars {
    /// `DOCKER_HOST`.
    pub docker_host: Option<String>,
    /// `DOCKER_CONTEXT`.
    pub docker_context: Option<String>,
    /// `DOCKER_CONFIG`: the folder of `config.json` and `contexts/`.
    pub docker_config: Option<PathBuf>,
    /// `DOCKER_CERT_PATH`: `ca.pem`, `cert.pem`, `key.pem` for `DOCKER_TLS_VERIFY`.
    pub docker_cert_path: Option<PathBuf>,
    /// `DOCKER_TLS_VERIFY` is set (to anything but the empty string).
    pub docker_tls_verify: bool,
    /// `HOME`, for the default `~/.docker`.
    pub home: Option<PathBuf>,
}

impl EnvVars {
    /// This process's environment.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        EnvVars {
            docker_host: var("DOCKER_HOST"),
            docker_context: var("DOCKER_CONTEXT"),
            docker_config: var("DOCKER_CONFIG").map(PathBuf::from),
            docker_cert_path: var("DOCKER_CERT_PATH").map(PathBuf::from),
            docker_tls_verify: var("DOCKER_TLS_VERIFY").is_some(),
            home: var("HOME").map(PathBuf::from),
        }
    }

    /// `$DOCKER_CONFIG`, else `~/.docker`.
    fn config_dir(&self) -> PathBuf {
        match (&self.docker_config, &self.home) {
            (Some(d), _) => d.clone(),
            (None, Some(h)) => h.join(".docker"),
            (None, None) => PathBuf::from(".docker"),
        }
    }
}

/// An engine to connect to, and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address as the user wrote it (`unix:///…`, `tcp://…`, `ssh://…`).
    pub host: String,
    /// How to reach it.
    pub transport: Transport,
    /// Which setting chose it.
    pub chosen_by: ChosenBy,
}

impl fmt::Display for Endpoint {
    /// `HOST (chosen by …)`, and the CA for TLS: what `-v` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (chosen by {})", self.host, self.chosen_by)?;
        if let Transport::Tcp { tls: Some(tls), .. } = &self.transport {
            write!(f, ", TLS verified against {}", tls.ca.display())?;
        }
        Ok(())
    }
}

/// How to reach an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A local socket.
    Unix(PathBuf),
    /// HTTP over TCP, with TLS when `tls` is set.
    Tcp {
        /// `HOST:PORT`.
        address: String,
        /// The CA to verify the engine against and the client certificate.
        tls: Option<TlsFiles>,
    },
    /// `ssh [-l USER] [-p PORT] HOST docker system dial-stdio`.
    Ssh(SshTarget),
}

/// PEM files for a TLS connection (`DOCKER_CERT_PATH` or a context's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA the engine's certificate must chain to.
    pub ca: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client certificate's key.
    pub key: PathBuf,
}

impl TlsFiles {
    fn in_dir(dir: &Path) -> Self {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// Where an `ssh://` engine lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// `USER@`, if given.
    pub user: Option<String>,
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// `:PORT`, if given.
    pub port: Option<u16>,
}

impl SshTarget {
    /// The `ssh` arguments that run `docker system dial-stdio` on the host,
    /// as the docker CLI passes them (the user's ssh config, keys, agent
    /// and known_hosts apply).
    pub fn ssh_args(&self) -> Vec<String> {
        let mut args = vec!["-o".into(), "ConnectTimeout=30".into(), "-T".into()];
        if let Some(u) = &self.user {
            args.extend(["-l".into(), u.clone()]);
        }
        if let Some(p) = self.port {
            args.extend(["-p".into(), p.to_string()]);
        }
        args.extend([
            "--".into(),
            self.host.clone(),
            "docker".into(),
            "system".into(),
            "dial-stdio".into(),
        ]);
        args
    }
}

/// Which setting chose the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChosenBy {
    /// `DOCKER_HOST`.
    DockerHost,
    /// A docker context.
    Context {
        /// Its name.
        name: String,
        /// How it was selected.
        selected_by: ContextSelector,
    },
    /// Nothing is set (or the context `default` is selected).
    Default,
}

/// How a docker context was selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSelector {
    /// `DOCKER_CONTEXT`.
    DockerContext,
    /// `currentContext` in this `config.json`.
    CurrentContext(PathBuf),
}

impl fmt::Display for ContextSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextSelector::DockerContext => write!(f, "DOCKER_CONTEXT"),
            ContextSelector::CurrentContext(config) => {
                write!(f, "currentContext in {}", config.display())
            }
        }
    }
}

impl fmt::Display for ChosenBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChosenBy::DockerHost => write!(f, "DOCKER_HOST"),
            ChosenBy::Context { name, selected_by } => {
                write!(f, "docker context `{name}`, from {selected_by}")
            }
            ChosenBy::Default => write!(
                f,
                "default: no DOCKER_HOST, and no docker context other than `default`"
            ),
        }
    }
}

/// Why no engine address could be worked out.
#[derive(Debug, Error, Diagnostic, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointError {
    /// An address nixpack cannot use.
    #[error("{chosen_by} names `{host}`, which is not a Docker Engine address: {reason}")]
    #[diagnostic(
        code(nixpack::engine::address),
        help("use unix:///PATH, tcp://HOST:PORT (with DOCKER_TLS_VERIFY=1 for TLS) or ssh://[USER@]HOST[:PORT]")
    )]
    BadHost {
        /// The address.
        host: String,
        /// Where it came from.
        chosen_by: ChosenBy,
        /// What is wrong with it.
        reason: String,
    },
    /// The selected context has no `meta.json`.
    #[error("docker context `{name}` (from {selected_by}) does not exist: there is no {}", meta.display())]
    #[diagnostic(
        code(nixpack::engine::context_missing),
        help("`docker context ls` lists the contexts; select one that exists, or `default` for the local socket")
    )]
    ContextMissing {
        /// The context's name.
        name: String,
        /// How it was selected.
        selected_by: ContextSelector,
        /// The file that should describe it.
        meta: PathBuf,
    },
    /// A context's files cannot be used.
    #[error("docker context `{name}` (from {selected_by}) is broken: {}: {reason}", file.display())]
    #[diagnostic(
        code(nixpack::engine::context_broken),
        help("`docker context inspect {name}` shows what the docker CLI makes of it; fix or recreate it with `docker context create`")
    )]
    ContextBroken {
        /// The context's name.
        name: String,
        /// How it was selected.
        selected_by: ContextSelector,
        /// The file at fault.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `config.json` cannot be read.
    #[error("cannot read the docker CLI's config {}: {reason}", file.display())]
    #[diagnostic(
        code(nixpack::engine::config),
        help("fix the file, or set DOCKER_HOST or DOCKER_CONTEXT, which take precedence over its currentContext")
    )]
    Config {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Works out the engine from `env` and the docker CLI's files.
pub fn resolve(env: &EnvVars) -> Result<Endpoint, EndpointError> {
    if let Some(host) = &env.docker_host {
        return from_env_host(host, env, ChosenBy::DockerHost);
    }
    let config_dir = env.config_dir();
    let (name, selected_by) = match &env.docker_context {
        Some(name) => (name.clone(), ContextSelector::DockerContext),
        None => {
            let config = config_dir.join("config.json");
            match current_context(&config)? {
                Some(name) => (name, ContextSelector::CurrentContext(config)),
                None => return default_endpoint(env),
            }
        }
    };
    if name == "default" {
        return default_endpoint(env);
    }
    from_context(&config_dir, name, selected_by)
}

/// The default socket, or with `DOCKER_TLS_VERIFY` the CLI's default TLS
/// address.
fn default_endpoint(env: &EnvVars) -> Result<Endpoint, EndpointError> {
    let host = if env.docker_tls_verify {
        "tcp://localhost:2376"
    } else {
        DEFAULT_SOCKET
    };
    from_env_host(host, env, ChosenBy::Default)
}

/// `DOCKER_HOST` (or the default), with the TLS variables for `tcp://`.
fn from_env_host(
    host: &str,
    env: &EnvVars,
    chosen_by: ChosenBy,
) -> Result<Endpoint, EndpointError> {
    let tls = env.docker_tls_verify.then(|| {
        TlsFiles::in_dir(
            &env.docker_cert_path
                .clone()
                .unwrap_or_else(|| env.config_dir()),
        )
    });
    let transport = parse_host(host, tls).map_err(|reason| EndpointError::BadHost {
        host: host.to_owned(),
        chosen_by: chosen_by.clone(),
        reason,
    })?;
    Ok(Endpoint {
        host: host.to_owned(),
        transport,
        chosen_by,
    })
}

/// `currentContext` of a `config.json`; a missing file means none.
fn current_context(config: &Path) -> Result<Option<String>, EndpointError> {
    let bytes = match std::fs::read(config) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(EndpointError::Config {
                file: config.to_owned(),
                reason: e.to_string(),
            })
        }
    };
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| EndpointError::Config {
            file: config.to_owned(),
            reason: e.to_string(),
        })?;
    match json.get("currentContext") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(EndpointError::Config {
            file: config.to_owned(),
            reason: format!("currentContext is {other}, not a context name"),
        }),
    }
}

/// The docker CLI's folder name for a context: the sha256 of its name.
pub fn context_dir_name(name: &str) -> String {
    format!("{:x}", Sha256::digest(name.as_bytes()))
}

fn from_context(
    config_dir: &Path,
    name: String,
    selected_by: ContextSelector,
) -> Result<Endpoint, EndpointError> {
    let id = context_dir_name(&name);
    let meta = config_dir
        .join("contexts")
        .join("meta")
        .join(&id)
        .join("meta.json");
    let broken = |file: &Path, reason: String| EndpointError::ContextBroken {
        name: name.clone(),
        selected_by: selected_by.clone(),
        file: file.to_owned(),
        reason,
    };
    let bytes = match std::fs::read(&meta) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EndpointError::ContextMissing {
                name,
                selected_by,
                meta,
            })
        }
        Err(e) => return Err(broken(&meta, e.to_string())),
    };
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| broken(&meta, e.to_string()))?;
    let docker = &json["Endpoints"]["docker"];
    let host = match docker.get("Host") {
        Some(serde_json::Value::String(h)) if !h.is_empty() => h.clone(),
        _ => return Err(broken(&meta, "it has no Endpoints.docker.Host".to_owned())),
    };
    let skip_verify = docker
        .get("SkipTLSVerify")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let tls_dir = config_dir
        .join("contexts")
        .join("tls")
        .join(&id)
        .join("docker");
    let tls = if host.starts_with("tcp://") && (tls_dir.exists() || skip_verify) {
        if skip_verify {
            return Err(broken(
                &meta,
                "SkipTLSVerify is true; nixpack always verifies the engine's certificate (give the context a CA instead: `docker context update --docker ca=…`)".to_owned(),
            ));
        }
        let files = TlsFiles::in_dir(&tls_dir);
        if !files.ca.exists() {
            return Err(broken(
                &files.ca,
                "the context has TLS files but no ca.pem; nixpack verifies the engine against it"
                    .to_owned(),
            ));
        }
        Some(files)
    } else {
        None
    };
    let transport = parse_host(&host, tls)
        .map_err(|reason| broken(&meta, format!("Endpoints.docker.Host `{host}`: {reason}")))?;
    Ok(Endpoint {
        host,
        transport,
        chosen_by: ChosenBy::Context { name, selected_by },
    })
}

/// Parses an engine address. `tls` applies to `tcp://` only (its default
/// port is then 2376, else 2375, as for the docker CLI).
pub fn parse_host(host: &str, tls: Option<TlsFiles>) -> Result<Transport, String> {
    let Some((scheme, rest)) = host.split_once("://") else {
        return Err("it has no scheme (unix://, tcp:// or ssh://)".to_owned());
    };
    match scheme {
        "unix" => {
            if rest.is_empty() {
                return Err("unix:// needs a socket path".to_owned());
            }
            Ok(Transport::Unix(PathBuf::from(rest)))
        }
        "tcp" => {
            let hostport = rest.strip_suffix('/').unwrap_or(rest);
            if hostport.is_empty() || hostport.contains('/') || hostport.contains('@') {
                return Err("tcp:// takes HOST[:PORT] and nothing else".to_owned());
            }
            let (_, port) = split_port(hostport)?;
            let address = match port {
                Some(_) => hostport.to_owned(),
                None => format!("{hostport}:{}", if tls.is_some() { 2376 } else { 2375 }),
            };
            Ok(Transport::Tcp { address, tls })
        }
        "ssh" => {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if rest.contains('/') {
                return Err("ssh:// takes [USER@]HOST[:PORT], no path".to_owned());
            }
            let (user, hostport) = match rest.rsplit_once('@') {
                Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
                Some(_) => return Err("the user before `@` is empty".to_owned()),
                None => (None, rest),
            };
            let (host, port) = split_port(hostport)?;
            if host.is_empty() {
                return Err("ssh:// needs a host".to_owned());
            }
            Ok(Transport::Ssh(SshTarget {
                user,
                host: host.to_owned(),
                port,
            }))
        }
        other => Err(format!(
            "nixpack speaks unix://, tcp:// and ssh://, not {other}://"
        )),
    }
}

/// `HOST[:PORT]` or `[V6]:PORT` → (host without brackets, port).
fn split_port(hostport: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| "an unclosed `[` in the host".to_owned())?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("unexpected `{after}` after the host")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{p}` is not a port"))
        })
        .transpose()?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(dir: &Path) -> EnvVars {
        EnvVars {
            docker_config: Some(dir.to_owned()),
            ..EnvVars::default()
        }
    }

    /// Writes a context the way `docker context create` does.
    fn context(dir: &Path, name: &str, meta: &str) -> PathBuf {
        let d = dir.join("contexts/meta").join(context_dir_name(name));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("meta.json"), meta).unwrap();
        d.join("meta.json")
    }

    fn meta(name: &str, host: &str) -> String {
        format!(
            r#"{{"Name":"{name}","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#
        )
    }

    #[test]
    fn the_docker_cli_names_a_context_folder_by_the_sha256_of_its_name() {
        // `docker context create remote` makes contexts/meta/<this>/.
        assert_eq!(
            context_dir_name("remote"),
            "b71199ebd070b36beab7317920c2c2f1d777df8d05e5527d8458fda57cb17a7a"
        );
    }

    #[test]
    fn nothing_set_means_the_default_socket() {
        let dir = tempfile::tempdir().unwrap();
        let e = resolve(&env(dir.path())).unwrap();
        assert_eq!(e.host, DEFAULT_SOCKET);
        assert_eq!(e.transport, Transport::Unix("/var/run/docker.sock".into()));
        assert_eq!(e.chosen_by, ChosenBy::Default);
    }

    #[test]
    fn docker_host_beats_docker_context_and_current_context() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"missing"}"#,
        )
        .unwrap();
        let e = resolve(&EnvVars {
            docker_host: Some("unix:///tmp/x.sock".into()),
            docker_context: Some("also-missing".into()),
            ..env(dir.path())
        })
        .unwrap();
        assert_eq!(e.transport, Transport::Unix("/tmp/x.sock".into()));
        assert_eq!(e.chosen_by, ChosenBy::DockerHost);
    }

    #[test]
    fn docker_context_beats_current_context() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"currentContext":"b"}"#).unwrap();
        context(dir.path(), "a", &meta("a", "unix:///run/a.sock"));
        context(dir.path(), "b", &meta("b", "unix:///run/b.sock"));
        let e = resolve(&EnvVars {
            docker_context: Some("a".into()),
            ..env(dir.path())
        })
        .unwrap();
        assert_eq!(e.transport, Transport::Unix("/run/a.sock".into()));
        assert_eq!(
            e.chosen_by,
            ChosenBy::Context {
                name: "a".into(),
                selected_by: ContextSelector::DockerContext
            }
        );
        let e = resolve(&env(dir.path())).unwrap();
        assert_eq!(e.transport, Transport::Unix("/run/b.sock".into()));
        assert_eq!(
            e.chosen_by,
            ChosenBy::Context {
                name: "b".into(),
                selected_by: ContextSelector::CurrentContext(dir.path().join("config.json"))
            }
        );
        assert_eq!(
            e.chosen_by.to_string(),
            format!(
                "docker context `b`, from currentContext in {}",
                dir.path().join("config.json").display()
            )
        );
    }

    #[test]
    fn the_context_named_default_is_the_default_socket() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"default"}"#,
        )
        .unwrap();
        let e = resolve(&env(dir.path())).unwrap();
        assert_eq!(e.host, DEFAULT_SOCKET);
        assert_eq!(e.chosen_by, ChosenBy::Default);
    }

    #[test]
    fn config_dir_defaults_to_home_dot_docker() {
        let home = tempfile::tempdir().unwrap();
        let docker = home.path().join(".docker");
        std::fs::create_dir(&docker).unwrap();
        std::fs::write(
            docker.join("config.json"),
            r#"{"auths":{},"currentContext":"c"}"#,
        )
        .unwrap();
        context(&docker, "c", &meta("c", "ssh://me@build-box:2222"));
        let e = resolve(&EnvVars {
            home: Some(home.path().to_owned()),
            ..EnvVars::default()
        })
        .unwrap();
        assert_eq!(
            e.transport,
            Transport::Ssh(SshTarget {
                user: Some("me".into()),
                host: "build-box".into(),
                port: Some(2222)
            })
        );
    }

    #[test]
    fn a_missing_context_names_the_context_and_the_file_it_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"gone"}"#,
        )
        .unwrap();
        let err = resolve(&env(dir.path())).unwrap_err();
        let meta = dir
            .path()
            .join("contexts/meta")
            .join(context_dir_name("gone"))
            .join("meta.json");
        assert_eq!(
            err.to_string(),
            format!(
                "docker context `gone` (from currentContext in {}) does not exist: there is no {}",
                dir.path().join("config.json").display(),
                meta.display()
            )
        );
    }

    #[test]
    fn a_broken_context_names_the_context_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = context(dir.path(), "bad", "{not json");
        let err = resolve(&EnvVars {
            docker_context: Some("bad".into()),
            ..env(dir.path())
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("docker context `bad` (from DOCKER_CONTEXT) is broken: "),
            "{text}"
        );
        assert!(text.contains(&file.display().to_string()), "{text}");

        context(dir.path(), "nohost", r#"{"Name":"nohost","Endpoints":{}}"#);
        let err = resolve(&EnvVars {
            docker_context: Some("nohost".into()),
            ..env(dir.path())
        })
        .unwrap_err();
        assert!(
            err.to_string().ends_with("it has no Endpoints.docker.Host"),
            "{err}"
        );

        context(dir.path(), "ftp", &meta("ftp", "ftp://x"));
        let err = resolve(&EnvVars {
            docker_context: Some("ftp".into()),
            ..env(dir.path())
        })
        .unwrap_err();
        assert!(err.to_string().contains("not ftp://"), "{err}");
    }

    #[test]
    fn a_broken_config_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{").unwrap();
        let err = resolve(&env(dir.path())).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot read the docker CLI's config {}",
                dir.path().join("config.json").display()
            )),
            "{err}"
        );
        // DOCKER_HOST never reads it.
        assert!(resolve(&EnvVars {
            docker_host: Some("unix:///s".into()),
            ..env(dir.path())
        })
        .is_ok());
    }

    #[test]
    fn a_context_with_tls_files_verifies_against_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        context(dir.path(), "tls", &meta("tls", "tcp://10.0.0.1:2376"));
        let tls = dir
            .path()
            .join("contexts/tls")
            .join(context_dir_name("tls"))
            .join("docker");
        std::fs::create_dir_all(&tls).unwrap();
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(tls.join(f), "").unwrap();
        }
        let e = resolve(&EnvVars {
            docker_context: Some("tls".into()),
            // Only the default context reads DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
            docker_cert_path: Some("/elsewhere".into()),
            ..env(dir.path())
        })
        .unwrap();
        assert_eq!(
            e.transport,
            Transport::Tcp {
                address: "10.0.0.1:2376".into(),
                tls: Some(TlsFiles::in_dir(&tls))
            }
        );
    }

    #[test]
    fn a_context_that_skips_tls_verification_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        context(
            dir.path(),
            "skip",
            r#"{"Name":"skip","Endpoints":{"docker":{"Host":"tcp://h:2376","SkipTLSVerify":true}}}"#,
        );
        let err = resolve(&EnvVars {
            docker_context: Some("skip".into()),
            ..env(dir.path())
        })
        .unwrap_err();
        assert!(err.to_string().contains("SkipTLSVerify"), "{err}");
    }

    #[test]
    fn docker_tls_verify_uses_docker_cert_path_else_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        let tls_env = EnvVars {
            docker_host: Some("tcp://127.0.0.1:40000".into()),
            docker_tls_verify: true,
            ..env(dir.path())
        };
        let e = resolve(&tls_env).unwrap();
        assert_eq!(
            e.transport,
            Transport::Tcp {
                address: "127.0.0.1:40000".into(),
                tls: Some(TlsFiles::in_dir(dir.path()))
            }
        );
        let e = resolve(&EnvVars {
            docker_cert_path: Some("/certs".into()),
            ..tls_env
        })
        .unwrap();
        assert_eq!(
            e.transport,
            Transport::Tcp {
                address: "127.0.0.1:40000".into(),
                tls: Some(TlsFiles::in_dir(Path::new("/certs")))
            }
        );
    }

    #[test]
    fn tcp_ports_default_as_in_the_docker_cli() {
        assert_eq!(
            parse_host("tcp://box", None),
            Ok(Transport::Tcp {
                address: "box:2375".into(),
                tls: None
            })
        );
        let tls = TlsFiles::in_dir(Path::new("/c"));
        assert_eq!(
            parse_host("tcp://box/", Some(tls.clone())),
            Ok(Transport::Tcp {
                address: "box:2376".into(),
                tls: Some(tls)
            })
        );
        // DOCKER_TLS_VERIFY without DOCKER_HOST: the CLI's default TLS address.
        let e = resolve(&EnvVars {
            docker_tls_verify: true,
            docker_config: Some("/cfg".into()),
            ..EnvVars::default()
        })
        .unwrap();
        assert_eq!(e.host, "tcp://localhost:2376");
    }

    #[test]
    fn ssh_addresses_keep_user_host_and_port_apart() {
        assert_eq!(
            parse_host("ssh://root@127.0.0.1:2222", None),
            Ok(Transport::Ssh(SshTarget {
                user: Some("root".into()),
                host: "127.0.0.1".into(),
                port: Some(2222)
            }))
        );
        assert_eq!(
            parse_host("ssh://[::1]:22", None),
            Ok(Transport::Ssh(SshTarget {
                user: None,
                host: "::1".into(),
                port: Some(22)
            }))
        );
        let Ok(Transport::Ssh(t)) = parse_host("ssh://me@box", None) else {
            panic!()
        };
        assert_eq!(
            t.ssh_args().join(" "),
            "-o ConnectTimeout=30 -T -l me -- box docker system dial-stdio"
        );
        assert!(parse_host("ssh://box/var/run/docker.sock", None).is_err());
        assert!(parse_host("ssh://box:http", None).is_err());
        assert!(parse_host("box:2375", None).is_err());
        assert!(parse_host("npipe:////./pipe/docker_engine", None).is_err());
    }
}
